"""Where model pods run: the nodeSelector and tolerations the platform gives every model pod (the
chart's modelPods), read once when the operator starts.

Placement is the platform's, not the model owner's: a ModelDeployment has no field for it, so a
namespace editor cannot put a model next to another tenant's workloads or onto a node pool meant
for something else. The same values bound what the operator may write (the chart's admission
policy admits the operator's Deployments only with exactly this placement), so the values are
checked here as strictly as that policy needs them to be.
"""

from __future__ import annotations

import enum
import json
import re
import typing

import pydantic

from modelguard.api import conventions, errors

# A label key: an optional DNS subdomain prefix and '/', then a name of 1 to 63 characters.
LABEL_KEY_PATTERN: typing.Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# A label value may be empty (a node labelled `gpu=` is selected by {gpu: ""}).
LABEL_VALUE_PATTERN: typing.Final = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"

_MAX_LABEL_KEY: typing.Final = 253 + 1 + 63
_LABEL_KEY_RULE: typing.Final = (
    "must be a label key: an optional DNS subdomain and '/', then 1 to 63 letters, digits,"
    " '-', '_' or '.', starting and ending with a letter or digit"
)
LabelKey = typing.Annotated[
    str,
    pydantic.Field(pattern=LABEL_KEY_PATTERN, max_length=_MAX_LABEL_KEY),
    errors.Hint(_LABEL_KEY_RULE),
]
LabelValue = typing.Annotated[
    str,
    pydantic.Field(pattern=LABEL_VALUE_PATTERN, max_length=63),
    errors.Hint(
        "must be a label value: empty, or 1 to 63 letters, digits, '-', '_' or '.', starting and"
        " ending with a letter or digit"
    ),
]


class TolerationOperator(enum.StrEnum):
    """How a toleration matches a taint's value."""

    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(enum.StrEnum):
    """The taint effect a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(conventions.Spec):
    """One toleration of every model pod, as in a pod spec."""

    model_config = pydantic.ConfigDict(frozen=True)

    key: LabelKey | None = None
    """The taint key; empty with operator Exists: every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    value: LabelValue | None = None
    """The taint value (operator Equal only)."""
    effect: TaintEffect | None = None
    """The taint effect tolerated; empty: all."""
    # Strict: true or "300" are not a number of seconds; at most what the API server's int64 holds.
    toleration_seconds: int | None = pydantic.Field(default=None, ge=0, le=2**63 - 1, strict=True)
    """How long a NoExecute taint is tolerated; empty: forever."""

    @pydantic.model_validator(mode="after")
    def _as_the_api_server_requires(self) -> Toleration:
        # The API server's own rules for a pod's tolerations: caught here, the operator does not
        # start rather than have every model's Deployment refused.
        if self.operator is TolerationOperator.EXISTS and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if not self.key and self.operator is not TolerationOperator.EXISTS:
            raise ValueError("operator must be Exists when key is empty (it tolerates every taint)")
        if self.toleration_seconds is not None and self.effect is not TaintEffect.NO_EXECUTE:
            raise ValueError("tolerationSeconds is only for effect NoExecute")
        return self

    def manifest(self) -> dict[str, typing.Any]:
        """The toleration as a pod spec holds it (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class Placement(conventions.Spec):
    """The nodeSelector and tolerations of every model pod. Empty (the default): the scheduler
    places model pods on any node whose taints they tolerate (none)."""

    # One value shared by every pass (and a default argument): it never changes once read.
    model_config = pydantic.ConfigDict(frozen=True)

    node_selector: dict[str, LabelValue] = pydantic.Field(default_factory=dict)
    tolerations: list[Toleration] = pydantic.Field(default_factory=list, max_length=32)

    @pydantic.field_validator("node_selector", mode="before")
    @classmethod
    def _label_keys(cls, value: object) -> object:
        # Checked here rather than by the key's type: the message then names the key itself.
        for key in value if isinstance(value, dict) else ():
            if not isinstance(key, str):
                continue
            if len(key) > _MAX_LABEL_KEY or not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"{json.dumps(key)} {_LABEL_KEY_RULE}")
        return value

    def manifest(self) -> dict[str, typing.Any]:
        """The pod spec fields; empty ones left out, so that without placement the pods are
        exactly what they were before placement existed."""
        fields: dict[str, typing.Any] = {}
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [toleration.manifest() for toleration in self.tolerations]
        return fields


NONE: typing.Final = Placement()

MAX_SETTING_CHARACTERS: typing.Final = 64 * 1024
"""Far more than 32 tolerations and 32 labels take."""


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, typing.Any]]) -> dict[str, typing.Any]:
    # json.loads keeps the last of two equal keys silently: which one was meant is not known.
    seen: dict[str, typing.Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"{json.dumps(key)} is given twice")
        seen[key] = value
    return seen


def parse(*, node_selector: str | None, tolerations: str | None) -> Placement:
    """The placement from its two settings, each JSON (a map; a list); empty or unset: none.

    Raises errors.InvalidObjectError with one message per problem, each naming the setting as
    the chart's values do (modelPods.nodeSelector, modelPods.tolerations[0].effect).
    """
    raw: dict[str, typing.Any] = {}
    problems: list[str] = []
    for field, text, shape in (
        ("nodeSelector", node_selector, dict),
        ("tolerations", tolerations, list),
    ):
        if not text or not text.strip():
            continue
        if len(text) > MAX_SETTING_CHARACTERS:
            problems.append(f"modelPods.{field}: longer than {MAX_SETTING_CHARACTERS} characters")
            continue
        try:
            value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as error:
            problems.append(f"modelPods.{field}: not JSON ({error.msg} at character {error.pos})")
            continue
        except _DuplicateKey as error:
            problems.append(f"modelPods.{field}: {error}")
            continue
        except (ValueError, RecursionError):
            # An integer of thousands of digits, or arrays nested thousands deep.
            problems.append(
                f"modelPods.{field}: not JSON this operator reads (nested too deep or a"
                " number too long)"
            )
            continue
        if not isinstance(value, shape):
            kind = "map of label keys to values" if shape is dict else "list of tolerations"
            problems.append(f"modelPods.{field}: must be a {kind}, got {errors.render(value)}")
            continue
        raw[field] = value
    if problems:
        raise errors.InvalidObjectError(problems)
    try:
        return Placement.model_validate(raw, by_alias=True, by_name=False)
    except pydantic.ValidationError as error:
        raise errors.InvalidObjectError(
            [f"modelPods.{line}" for line in errors.messages(error, model=Placement)]
        ) from error
