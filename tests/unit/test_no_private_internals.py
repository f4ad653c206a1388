"""src/ extends uvicorn, websockets, prometheus_client and httptools only through what they
document (issue 16): no private module, name or attribute of theirs, none of the internals the
old code reached into, no subclass of their protocol classes (composition instead), and the
inner uvicorn protocols driven through the ``asyncio.Protocol`` interface only. A routine
upgrade can then only break the product where tests/integration/http/test_library_contracts.py
says so."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LIBRARIES = ("uvicorn", "websockets", "prometheus_client", "httptools")
NAMED = {"gi_yieldfrom", "gi_code", "curr_msg_data_type", "_upper_bounds", "_buckets", "_sum"}
"""Internals the code used to reach into, banned by name wherever they appear."""
PROTOCOL_INTERFACE = {"connection_made", "data_received", "eof_received", "connection_lost",
                      "pause_writing", "resume_writing"}
DOCUMENTED_BASES = {"Collector"}  # prometheus_client's base for custom collectors


@cache
def library_private_names() -> frozenset[str]:
    """Every ``_name`` (not dunder) the libraries define or use as an attribute."""
    names: set[str] = set()
    pattern = re.compile(r"(?:\.|\bdef |\bclass |^\s*)(_[A-Za-z]\w*)", re.M)
    for lib in LIBRARIES:
        spec = importlib.util.find_spec(lib)
        assert spec is not None and spec.submodule_search_locations, lib
        for root in spec.submodule_search_locations:
            for path in Path(root).rglob("*.py*"):
                if path.suffix not in (".py", ".pyi", ".pyx"):
                    continue
                for name in pattern.findall(path.read_text(errors="replace")):
                    if not name.startswith("__"):
                        names.add(name)
    return frozenset(names)


def imported_from_libraries(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in LIBRARIES:
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES:
                    names.add((a.asname or a.name).split(".")[0])
    return names


def problems(source: str, filename: str = "<src>") -> list[str]:
    tree = ast.parse(source, filename)
    private = library_private_names()
    from_libraries = imported_from_libraries(tree)
    found = []

    def at(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in LIBRARIES:
            if any(p.startswith("_") for p in node.module.split(".")):
                at(node, f"private module {node.module}")
            for a in node.names:
                if a.name.startswith("_"):
                    at(node, f"private name {node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] in LIBRARIES and any(p.startswith("_") for p in parts):
                    at(node, f"private module {a.name}")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr in NAMED:
                at(node, f"banned internal .{attr}")
            value = node.value
            own = (isinstance(value, ast.Name) and value.id in ("self", "cls")) or (
                isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "super")
            if attr.startswith("_") and not attr.startswith("__") and not own \
                    and attr in private:
                at(node, f"private attribute .{attr} of a library")
            if isinstance(value, ast.Attribute) and value.attr == "inner" and \
                    attr not in PROTOCOL_INTERFACE:
                at(node, f".inner.{attr}: the inner protocol beyond asyncio.Protocol")
        elif isinstance(node, ast.Name) and node.id in NAMED:
            at(node, f"banned internal {node.id}")
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.id if isinstance(base, ast.Name) else (
                    base.attr if isinstance(base, ast.Attribute) else "")
                if name in from_libraries and name not in DOCUMENTED_BASES:
                    at(node, f"class {node.name} subclasses {name}")
    return found


def test_src_reaches_into_no_library_internals() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += problems(path.read_text(), str(path.relative_to(SRC)))
    assert found == []


@pytest.mark.parametrize("snippet", [
    "from uvicorn._types import Scope",
    "from uvicorn.protocols.utils import _private",
    "import websockets._internal",
    "h._upper_bounds",
    "h._buckets[0].inc()",
    "gen.gi_yieldfrom",
    "self.curr_msg_data_type = 'text'",
    "self.inner.cycle",
    "self.inner.queue.empty()",
    "proto._unset_keepalive_if_required()",
    "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol\n"
    "class P(HttpToolsProtocol): pass",
])
def test_the_check_catches_what_it_bans(snippet: str) -> None:
    assert problems(snippet)


@pytest.mark.parametrize("snippet", [
    "self._timer = None",
    "super()._closing(1000)",
    "self.inner.data_received(b'')",
    "from prometheus_client.registry import Collector\nclass C(Collector): pass",
])
def test_the_check_lets_our_own_names_be(snippet: str) -> None:
    assert problems(snippet) == []
