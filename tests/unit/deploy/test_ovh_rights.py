"""The token's rights are the calls the tool makes: one list (relay_deploy.ovh_rights)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from relay_deploy.ovh_api import OvhApi
from relay_deploy.ovh_rights import CALLS, access_rules, declared, rules_text

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src" / "relay_deploy"


def test_one_rule_per_call_with_params_as_wildcards() -> None:
    assert access_rules() == [{"method": c.method, "path": re.sub(r"\{\w+\}", "*", c.template)}
                              for c in CALLS]
    assert {"method": "GET", "path": "/vps"} in access_rules()  # /vps/* does not cover it
    assert len({(c.method, c.template) for c in CALLS}) == len(CALLS)


def _calls_in_source() -> set[tuple[str, str]]:
    """Every (method, template) the tool's modules pass to OvhApi, read from the code."""
    found: set[tuple[str, str]] = set()
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if node.func.attr in ("get", "post") and args and str(args[0]).startswith("/"):
                found.add((node.func.attr.upper(), str(args[0])))
            elif node.func.attr == "call" and len(args) >= 2 and str(args[1]).startswith("/"):
                found.add((str(args[0]), str(args[1])))
    return found


def test_the_rules_equal_the_calls_the_tool_makes() -> None:
    assert _calls_in_source() == {(c.method, c.template) for c in CALLS}


def test_an_undeclared_call_is_refused_before_it_is_sent() -> None:
    class Client:
        def call(self, *args: object) -> None:
            raise AssertionError("sent")

    with pytest.raises(ValueError, match="not a declared OVH call"):
        OvhApi(Client()).call("POST", "/vps/{serviceName}/terminate", serviceName="x")
    with pytest.raises(ValueError):
        declared("DELETE", "/vps/{serviceName}")


def test_readme_and_example_list_every_right() -> None:
    readme = (REPO / "infra" / "README.md").read_text()
    example = (REPO / "infra" / "ovh.conf.example").read_text()
    for line in rules_text().splitlines():
        assert f"`{line}`" in readme, line
        assert f";   {line}\n" in example, line
