"""Where model pods run: the platform's placement (the chart's modelPods), read and checked when the
operator starts, so that a value the API server would refuse stops the start, naming the value,
instead of every model's Deployment being refused later."""

from __future__ import annotations

import json

import pytest

from modelguard import cli
from modelguard.api import errors, placement

REAL_NODE = {"modelguard.dev/node": "real"}
TAINT = {"key": "modelguard.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("node_selector", "tolerations", "expected"),
    [
        pytest.param(None, None, {}, id="unset"),
        pytest.param("", "  ", {}, id="empty"),
        pytest.param("{}", "[]", {}, id="empty-json"),
        pytest.param(json.dumps(REAL_NODE), None, {"nodeSelector": REAL_NODE}, id="selector"),
        pytest.param(
            json.dumps({"node-pool": ""}),
            None,
            {"nodeSelector": {"node-pool": ""}},
            id="empty-value",
        ),
        pytest.param(None, json.dumps([TAINT]), {"tolerations": [TAINT]}, id="toleration"),
        pytest.param(
            None,
            json.dumps([{"key": "dedicated"}, {"operator": "Exists"}]),
            {"tolerations": [{"key": "dedicated", "operator": "Equal"}, {"operator": "Exists"}]},
            id="defaults-written",
        ),
        pytest.param(
            None,
            json.dumps([{"key": "k", "effect": "NoExecute", "tolerationSeconds": 300}]),
            {
                "tolerations": [
                    {
                        "key": "k",
                        "operator": "Equal",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                ]
            },
            id="toleration-seconds",
        ),
    ],
)
def test_a_placement_is_read_as_given(
    node_selector: str | None, tolerations: str | None, expected: dict[str, object]
) -> None:
    parsed = placement.parse(node_selector=node_selector, tolerations=tolerations)
    assert parsed.manifest() == expected


@pytest.mark.parametrize(
    ("node_selector", "tolerations", "says"),
    [
        pytest.param("{pool: gpu}", None, "modelPods.nodeSelector: not JSON", id="not-json"),
        pytest.param('["pool"]', None, "modelPods.nodeSelector: must be a map", id="not-a-map"),
        pytest.param(
            None, '{"key": "k"}', "modelPods.tolerations: must be a list", id="not-a-list"
        ),
        pytest.param(
            '{"a b": "x"}', None, 'modelPods.nodeSelector: "a b" must be a label key', id="key"
        ),
        pytest.param(
            '{"pool": "g p u"}',
            None,
            "modelPods.nodeSelector[pool]: must be a label value",
            id="value",
        ),
        pytest.param(
            '{"pool": 1}', None, "modelPods.nodeSelector[pool]: must be a valid string", id="number"
        ),
        pytest.param(
            None,
            '[{"key": "k", "effect": "NoSchedul"}]',
            "modelPods.tolerations[0].effect: must be 'NoSchedule', 'PreferNoSchedule' or"
            " 'NoExecute'",
            id="effect",
        ),
        pytest.param(
            None,
            '[{"key": "k", "operator": "In"}]',
            "modelPods.tolerations[0].operator",
            id="operator",
        ),
        pytest.param(
            None,
            '[{"key": "k", "operator": "Exists", "value": "v"}]',
            "modelPods.tolerations[0]: value must be empty when operator is Exists",
            id="exists-with-value",
        ),
        pytest.param(
            None,
            '[{"value": "v"}]',
            "modelPods.tolerations[0]: operator must be Exists when key is empty",
            id="no-key",
        ),
        pytest.param(
            None,
            '[{"key": "k", "tolerationSeconds": 5}]',
            "modelPods.tolerations[0]: tolerationSeconds is only for effect NoExecute",
            id="seconds-without-no-execute",
        ),
        pytest.param(
            None,
            '[{"key": "k", "tolerationSecond": 5}]',
            "modelPods.tolerations[0].tolerationSecond: unknown field",
            id="misspelt-field",
        ),
        # Each of these stopped the start with a traceback, or was read as something else.
        pytest.param(
            "1" * 5000, None, "modelPods.nodeSelector: not JSON this operator reads", id="long-int"
        ),
        pytest.param("[" * 100_000, None, "modelPods.nodeSelector: longer than", id="too-long"),
        pytest.param(
            "[" * 60_000,
            None,
            "modelPods.nodeSelector: not JSON this operator reads",
            id="nested-too-deep",
        ),
        pytest.param(
            '{"pool": "gpu", "pool": "ops"}',
            None,
            'modelPods.nodeSelector: "pool" is given twice',
            id="duplicate-key",
        ),
        pytest.param(
            None,
            '[{"key": "k", "effect": "NoExecute", "tolerationSeconds": 9223372036854775808}]',
            "modelPods.tolerations[0].tolerationSeconds",
            id="seconds-past-int64",
        ),
        pytest.param(
            None,
            '[{"key": "k", "effect": "NoExecute", "tolerationSeconds": true}]',
            "modelPods.tolerations[0].tolerationSeconds",
            id="seconds-true",
        ),
        pytest.param(
            None,
            '[{"key": "k", "effect": "NoExecute", "tolerationSeconds": "300"}]',
            "modelPods.tolerations[0].tolerationSeconds",
            id="seconds-text",
        ),
    ],
)
def test_a_placement_the_api_server_would_refuse_is_refused_naming_the_value(
    node_selector: str | None, tolerations: str | None, says: str
) -> None:
    with pytest.raises(errors.InvalidObjectError) as refused:
        placement.parse(node_selector=node_selector, tolerations=tolerations)
    assert says in str(refused.value)


def test_the_operator_does_not_start_with_a_placement_it_cannot_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The chart passes the values in the environment; a wrong one stops the start with the
    # setting's name, before anything reaches the cluster.
    monkeypatch.setenv(cli.TOLERATIONS_ENV, '[{"key": "gpu", "effect": "NoSchedul"}]')
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run"])
    message = str(stopped.value)
    assert "modelPods" in message
    assert "modelPods.tolerations[0].effect" in message
    assert "NoSchedul" in message


def test_the_flags_read_the_charts_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.NODE_SELECTOR_ENV, json.dumps(REAL_NODE))
    monkeypatch.setenv(cli.TOLERATIONS_ENV, json.dumps([TAINT]))
    args = cli.build_parser().parse_args(["run"])
    parsed = placement.parse(
        node_selector=args.model_pod_node_selector, tolerations=args.model_pod_tolerations
    )
    assert parsed.manifest() == {"nodeSelector": REAL_NODE, "tolerations": [TAINT]}
