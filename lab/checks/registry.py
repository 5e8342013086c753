"""Every checker by name, and running a scenario's checks against what it expects.

Each checker module keeps its own ``CHECKS`` dict; they are imported lazily
so that a missing or broken module costs only its own checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, RunData, Verdict
from lab.errors import ConfigError
from nodes.loader import load

MODULES = ("lab.checks.raft", "lab.checks.linearizable", "lab.checks.commit")

EXIT_OK, EXIT_DIFFERS, EXIT_UNKNOWN = 0, 1, 2


def all_checks() -> dict[str, Checker]:
    """Name -> checker, over every checker module."""
    out: dict[str, Checker] = {}
    for name in MODULES:     # a checker module that fails to import is an error, not a gap
        out.update(load(f"{name}:CHECKS"))
    return out


def expected(name: str, expect: Mapping[str, str]) -> str:
    return expect.get(name, HOLDS)


def run_checks(names: Iterable[str], data: RunData,
               expect: Mapping[str, str] | None = None) -> tuple[list[Verdict], int]:
    """Run each named check; return the verdicts and the exit code of DESIGN.md:
    0 every verdict as expected, 1 one differs, 2 one could not decide (and none differs)."""
    expect = dict(expect or {})
    known = all_checks()
    names = list(names)
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"unknown check {', '.join(missing)} (known: {', '.join(sorted(known)) or 'none'})")
    for name, want in expect.items():
        if want not in (HOLDS, VIOLATED):
            raise ConfigError(f"expect.{name} must be holds or violated, got {want!r}")
    verdicts = []
    for name in names:
        try:
            v = known[name](data)
        except Exception as e:  # noqa: BLE001 - a crashing checker decides nothing; say why
            v = Verdict(name, UNKNOWN, f"checker failed: {type(e).__name__}: {e}")
        verdicts.append(v)
    return verdicts, exit_code(verdicts, expect)


def exit_code(verdicts: Iterable[Verdict], expect: Mapping[str, str]) -> int:
    code = EXIT_OK
    for v in verdicts:
        if v.verdict == UNKNOWN:
            code = max(code, EXIT_UNKNOWN) if code != EXIT_DIFFERS else code
        elif v.verdict != expected(v.check, expect):
            code = EXIT_DIFFERS
    return code
