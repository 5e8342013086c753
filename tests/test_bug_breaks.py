"""Every named bug says which checks it breaks (``Core.bug_breaks``), those checks exist and
apply to its protocol, and the protocol's doc names the same ones in the bug's row: the sweeps
then assert that property, not "some violation"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.checks.registry import all_checks
from nodes.protocols import get, names

ROOT = Path(__file__).resolve().parent.parent
BUGGY = [n for n in names() if get(n).bugs]


def test_the_protocols_with_bugs_are_covered() -> None:
    assert {"raft", "twopc", "threepc"} <= set(BUGGY)


@pytest.mark.parametrize("protocol", BUGGY)
def test_each_bug_names_registered_applicable_checks(protocol: str) -> None:
    core = get(protocol)
    assert set(core.bug_breaks) == set(core.bugs)
    known = set(all_checks())
    for bug, checks in core.bug_breaks.items():
        assert checks, bug
        assert set(checks) <= known, (bug, checks)
        assert set(checks) <= set(core.applicable_checks()), (bug, checks)


@pytest.mark.parametrize("protocol", BUGGY)
def test_the_docs_name_the_same_checks(protocol: str) -> None:
    core = get(protocol)
    doc = (ROOT / "docs" / f"{protocol}.md").read_text(encoding="utf-8")
    known = set(all_checks())
    for bug, checks in core.bug_breaks.items():
        rows = [line for line in doc.splitlines() if line.startswith(f"| `{bug}` |")]
        assert len(rows) == 1, f"docs/{protocol}.md has no one table row for bug {bug}"
        named = set(re.findall(r"`([a-z_]+)`", rows[0])) & known
        assert named == set(checks), (bug, named, checks)
