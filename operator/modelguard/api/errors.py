"""Turning pydantic validation errors into messages a model owner can act on.

One message per problem, each naming the field the way kubectl and the API server do
(`spec.access.ingress[0].ipBlock.cidr`, `spec.serving.resources.limits[memory]`), so the same text
reads well in an admission denial, a status condition or an Event.
"""

import dataclasses
import json
import types
import typing

import pydantic
import pydantic_core
from pydantic import fields

# Inputs longer than this are cut in messages: they end up in conditions and Events.
_MAX_INPUT_CHARS = 80

# Pydantic's own text for these quotes a regular expression or a length; the field's hint, when it
# has one, says in words what the field accepts.
_HINTED_ERRORS = frozenset(
    {"string_pattern_mismatch", "string_too_long", "string_too_short", "value_error"}
)


@dataclasses.dataclass(frozen=True)
class Hint:
    """Annotated metadata: what a field accepts, said in words instead of a regular expression."""

    text: str


class InvalidObjectError(ValueError):
    """An object failed validation; `messages` holds one line per problem."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def messages(error: pydantic.ValidationError, *, model: type[pydantic.BaseModel]) -> list[str]:
    """One `path: problem` line per error in `error`, raised while validating `model`."""
    return [_message(detail, model=model) for detail in error.errors(include_url=False)]


def _message(detail: pydantic_core.ErrorDetails, *, model: type[pydantic.BaseModel]) -> str:
    path, leaf = _walk(detail["loc"], model=model)
    error_type: str = detail["type"]
    if error_type == "missing":
        problem = "required"
    elif error_type == "extra_forbidden":
        problem = "unknown field"
        if isinstance(leaf, type) and issubclass(leaf, pydantic.BaseModel):
            problem += f" (accepted: {', '.join(_aliases(leaf))})"
    elif error_type in ("too_short", "too_long"):
        bound = "at least" if error_type == "too_short" else "at most"
        limit = detail["ctx"]["min_length" if error_type == "too_short" else "max_length"]
        problem = f"must have {bound} {limit} item(s), has {detail['ctx']['actual_length']}"
    else:
        hint = _hint(leaf) if error_type in _HINTED_ERRORS else None
        problem = hint or _rephrase(detail["msg"])
        if not isinstance(detail["input"], dict | list):
            problem += f", got {render(detail['input'])}"
    return f"{path or '<root>'}: {problem}"


def _walk(loc: tuple[int | str, ...], *, model: type[pydantic.BaseModel]) -> tuple[str, object]:
    """The kubectl-style path of `loc`, and the annotation (or field) found at its end.

    Pydantic's loc does not say whether a string step is a field or a map key; the model does,
    so the walk follows the annotations alongside.
    """
    path = ""
    current: object = model
    for step in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
            field = _field(current, str(step))
            path += f".{step}" if path else str(step)
            # Keep the model itself for an unknown field, so the message can list what exists.
            current = field if field is not None else current
        elif typing.get_origin(current) is dict:
            path += f"[{step}]"
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            path += f"[{step}]"
            current = typing.get_args(current)[0]
        else:
            path += f"[{step}]" if isinstance(step, int) else f".{step}"
            current = None
    return path, current


def _unwrap(current: object) -> object:
    """The type a value at this step has: Optional and Annotated removed, a field's annotation."""
    if isinstance(current, fields.FieldInfo):
        current = current.annotation
    while True:
        if typing.get_origin(current) is typing.Annotated:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(current) if arg is not type(None)]
            if len(members) != 1:
                return current
            current = members[0]
        else:
            return current


def _field(model: type[pydantic.BaseModel], alias: str) -> fields.FieldInfo | None:
    # Pydantic reports locations by alias: a Python name found here is an unknown wire name.
    for name, field in model.model_fields.items():
        if (field.alias or name) == alias:
            return field
    return None


def _aliases(model: type[pydantic.BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _hint(leaf: object) -> str | None:
    if isinstance(leaf, fields.FieldInfo):
        metadata: typing.Iterable[object] = leaf.metadata
        # An optional field (`Hinted | None`) keeps its hint on the member, not on the field.
        members = [a for a in typing.get_args(leaf.annotation) if a is not type(None)]
        if len(members) == 1 and typing.get_origin(members[0]) is typing.Annotated:
            metadata = [*metadata, *typing.get_args(members[0])[1:]]
    elif typing.get_origin(leaf) is typing.Annotated:
        metadata = typing.get_args(leaf)[1:]
    else:
        return None
    return next((item.text for item in metadata if isinstance(item, Hint)), None)


def render(value: object) -> str:
    """`value` as JSON for a message, cut to a length a condition or an Event can carry."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_INPUT_CHARS else text[: _MAX_INPUT_CHARS - 3] + "..."


def _rephrase(text: str) -> str:
    """Pydantic's message in the voice of the API server ("must be ...")."""
    text = text.removeprefix("Value error, ")
    if text.startswith("Input should be "):
        return "must be " + text.removeprefix("Input should be ")
    return text[:1].lower() + text[1:]
