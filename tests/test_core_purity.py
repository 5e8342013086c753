"""Rule 1 of DESIGN.md, enforced: protocol cores do no I/O, and nodes/ never imports lab/."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a core must never touch: it would read a clock, draw its own randomness or do I/O.
CORE_FORBIDDEN = frozenset({"zmq", "socket", "threading", "asyncio", "time", "random",
                            "subprocess", "os"})
_DYNAMIC_IMPORTS = {"__import__", "import_module"}


def imported_modules(tree: ast.AST) -> Iterable[tuple[int, str]]:
    """(line, top-level module name) of every absolute import, including
    ``__import__("x")`` and ``importlib.import_module("x")`` with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            arg = node.args[0]
            if name in _DYNAMIC_IMPORTS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value.split(".")[0]


def forbidden_imports(root: Path, forbidden: frozenset[str]) -> list[str]:
    """``file:line: imports X`` for every import of a forbidden module in any .py below root."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in sorted(imported_modules(tree)):
            if module in forbidden:
                found.append(f"{path.relative_to(root.parent)}:{line}: imports {module}")
    return found


def test_protocol_cores_do_no_io():
    bad = forbidden_imports(ROOT / "nodes" / "protocols", CORE_FORBIDDEN)
    assert not bad, "protocol cores must do no I/O (DESIGN.md rule 1):\n" + "\n".join(bad)


def test_nodes_never_import_lab():
    bad = forbidden_imports(ROOT / "nodes", frozenset({"lab"}))
    assert not bad, "nodes/ ships alone in the image and must not import lab/:\n" + "\n".join(bad)


def test_there_are_cores_to_scan():
    assert (ROOT / "nodes" / "protocols" / "register.py").exists()


def test_scanner_catches_planted_imports(tmp_path):
    pkg = tmp_path / "protocols"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "clean.py").write_text("import hashlib\nfrom dataclasses import field\nfrom . import x\n")
    (pkg / "bad.py").write_text("import json\nimport time\n\nfrom os.path import join\n")
    (pkg / "sub" / "sneaky.py").write_text(
        "def f():\n    import random as r\n    return __import__('socket')\n"
        "import importlib\nimportlib.import_module('zmq.asyncio')\n")
    found = forbidden_imports(pkg, CORE_FORBIDDEN)
    assert found == [
        "protocols/bad.py:2: imports time",
        "protocols/bad.py:4: imports os",
        "protocols/sub/sneaky.py:2: imports random",
        "protocols/sub/sneaky.py:3: imports socket",
        "protocols/sub/sneaky.py:5: imports zmq",
    ]


def test_scanner_catches_lab_imports_but_not_lookalikes(tmp_path):
    pkg = tmp_path / "nodes"
    pkg.mkdir()
    (pkg / "agent.py").write_text("import labels\nfrom lab.errors import LabError\nimport lab\n")
    assert forbidden_imports(pkg, frozenset({"lab"})) == [
        "nodes/agent.py:2: imports lab", "nodes/agent.py:3: imports lab"]
