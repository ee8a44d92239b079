"""The runbooks' commands are the project's as they are today: every `modelguard` command in
docs/runbooks/ parses with the CLI's own parser, every chart value a `helm upgrade --set` gives
exists in values.yaml, and every page the runbooks link to exists. (The procedures themselves run
on a real API server in tests/integration/test_runbooks.py.)"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import typing
from pathlib import Path

import pytest
import yaml

from modelguard import cli

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks"
VALUES = yaml.safe_load((REPO / "charts" / "modelguard" / "values.yaml").read_text())


def _commands(page: Path) -> list[list[str]]:
    """Each shell command of the page's ```sh blocks, continuation lines joined, comments and
    redirections dropped, split as the shell would; pipelines give each of their commands."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            for command in " ".join(shlex.quote(w) for w in words).split(" '|' "):
                parts = shlex.split(command)
                while len(parts) >= 2 and parts[-2] in {">", ">>"}:
                    parts = parts[:-2]
                if parts:
                    commands.append(parts)
    return commands


PAGES = sorted(RUNBOOKS.glob("*.md"))
COMMANDS = [(page.name, command) for page in PAGES for command in _commands(page)]


def test_the_runbooks_hold_commands() -> None:
    programs = {command[0] for _, command in COMMANDS}
    assert {"kubectl", "helm", "modelguard"} <= programs


@pytest.mark.parametrize(
    "command",
    [command for _, command in COMMANDS if command[0] == "modelguard"],
    ids=lambda command: " ".join(command[:3]),
)
def test_modelguard_commands_parse(command: list[str]) -> None:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            cli.build_parser().parse_args(command[1:])
        except SystemExit as exit:
            pytest.fail(f"{shlex.join(command)}: {errors.getvalue().strip()} ({exit.code})")


def _value(path: str) -> typing.Any:
    node: typing.Any = VALUES
    for key in path.split("."):
        assert isinstance(node, dict), path
        assert key in node, f"{path}: no {key!r} in values.yaml"
        node = node[key]
    return node


@pytest.mark.parametrize(
    "command",
    [command for _, command in COMMANDS if command[:2] == ["helm", "upgrade"]],
    ids=lambda command: " ".join(command[-2:]),
)
def test_helm_upgrades_set_values_the_chart_has(command: list[str]) -> None:
    assert "charts/modelguard" in command
    assert "--reuse-values" in command, "an upgrade in a runbook must keep the installed values"
    for index, word in enumerate(command):
        if word == "--set":
            _value(command[index + 1].split("=", 1)[0])


def test_links_lead_somewhere() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: {target}"
