"""Every checker by name, and running a scenario's checks against what it expects.

Each checker module keeps its own ``CHECKS`` dict (and ``PARAMS`` for checks that take
parameters, ``TRACE_LINES`` for the trace lines each check reads: a run at a trace level
that leaves some of them out gets ``unknown`` from that check); they are imported lazily. A module names the protocols its checks belong
to in ``PROTOCOLS``; one that does not (``linearizable``) serves every protocol. Check
names are scoped by protocol: Paxos's ``agreement`` and PBFT's ``agreement`` are two
checkers, and a scenario gets the one of its own protocol.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, Params, RunData, Verdict
from lab.errors import ConfigError
from nodes.protocols.core import convert
from nodes.tracelog import LEVELS, left_out

MODULES = ("lab.checks.raft", "lab.checks.linearizable", "lab.checks.commit", "lab.checks.paxos",
           "lab.checks.pbft", "lab.checks.swim", "lab.checks.gossip")

EXIT_OK, EXIT_DIFFERS, EXIT_UNKNOWN = 0, 1, 2
# What a check no TRACE_LINES declares is taken to read: every kind of line (docs/trace.md).
ALL_LINES = frozenset({"send", "recv", "drop", "timer", "state", "commit", "apply", "request", "reply",
                       "fault", "log"})


def _scoped(attribute: str, protocol: str | None) -> dict[str, Any]:
    """``attribute`` (CHECKS or PARAMS) of the modules that serve ``protocol``, merged; the
    protocol's own modules win a name over generic ones. Without a protocol, every module
    (a listing of names, where two protocols may share one)."""
    generic: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for name in MODULES:     # a checker module that fails to import is an error, not a gap
        module = importlib.import_module(name)
        owners = getattr(module, "PROTOCOLS", None)
        if protocol is not None and owners is not None and protocol not in owners:
            continue
        (own if owners is not None else generic).update(getattr(module, attribute, {}))
    return {**generic, **own}


def all_checks(protocol: str | None = None) -> dict[str, Checker]:
    """Name -> checker for ``protocol`` (every registered name when None)."""
    return _scoped("CHECKS", protocol)


def trace_lines(protocol: str | None = None) -> dict[str, frozenset[str]]:
    """Check name -> the trace lines (``ev`` names) it reads, as its module declares them in
    ``TRACE_LINES``; a check its module says nothing of is taken to read them all."""
    return _scoped("TRACE_LINES", protocol)


def all_params(protocol: str | None = None) -> Params:
    """Check name -> {parameter: (unit, doc)} for ``protocol`` (every module's when None)."""
    return _scoped("PARAMS", protocol)


def convert_params(check: str, raw: Mapping[str, Any], declared: Params | None = None,
                   protocol: str | None = None) -> dict[str, Any]:
    """A check's parameters as written (``{threshold: 2s}``) in their units; ValueError names the
    parameter that is unknown or wrong (the YAML loader and ``zlab check`` both use this)."""
    takes = (all_params(protocol) if declared is None else declared).get(check, {})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in takes:
            known = ", ".join(sorted(takes)) or "none"
            raise ValueError(f"{key}: {check} takes no parameter {key!r} (its parameters: {known})")
        try:
            out[key] = convert(takes[key][0], value)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    return out


def split_check_items(items: Iterable[Any], protocol: str | None = None
                      ) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """A ``checks:`` list as stored in a run directory's scenario.yaml (names, or mappings with
    ``name`` and parameters) -> (names, name -> converted parameters)."""
    names: list[str] = []
    params: dict[str, dict[str, Any]] = {}
    declared = all_params(protocol)
    for item in items:
        if isinstance(item, Mapping):
            raw = dict(item)
            name = raw.pop("name", None)
            if not isinstance(name, str):
                raise ConfigError(f"a check given as a mapping needs a name, got {item!r}")
            try:
                params[name] = convert_params(name, raw, declared)
            except ValueError as e:
                raise ConfigError(str(e), field=f"checks.{name}") from None
        elif isinstance(item, str):
            name = item
        else:
            raise ConfigError(f"a check is a name or a mapping with a name, got {item!r}")
        names.append(name)
    return names, params


def expected(name: str, expect: Mapping[str, str]) -> str:
    return expect.get(name, HOLDS)


def run_checks(names: Iterable[str], data: RunData,
               expect: Mapping[str, str] | None = None,
               params: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[Verdict], int]:
    """Run each named check (with its ``params``, already converted); return the verdicts and
    the exit code of DESIGN.md: 0 every verdict as expected, 1 one differs, 2 one could not
    decide (and none differs). Names are those of the run's protocol (``data.scenario``)."""
    expect = dict(expect or {})
    known = all_checks(data.scenario.get("protocol"))
    names = list(names)
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"unknown check {', '.join(missing)} (known: {', '.join(sorted(known)) or 'none'})")
    for name, want in expect.items():
        if want not in (HOLDS, VIOLATED):
            raise ConfigError(f"expect.{name} must be holds or violated, got {want!r}")
    verdicts = []
    params = params or {}
    # A run's scenario.yaml names its trace level when it is not `all` (runner.py): a check that
    # reads lines that level leaves out cannot decide, and must not pass or fail on their absence.
    level = data.scenario.get("trace", "all")
    if level not in LEVELS:
        raise ConfigError(f"trace must be one of {', '.join(LEVELS)}, got {level!r}")
    reads = trace_lines(data.scenario.get("protocol")) if level != "all" else {}
    for name in names:
        missing = left_out(level, reads.get(name, ALL_LINES)) if level != "all" else []
        if missing:
            verdicts.append(Verdict(name, UNKNOWN, f"reads the trace's {', '.join(missing)} lines, which "
                                    f"trace level {level} leaves out (run it with ZLAB_TRACE=all)"))
            continue
        try:
            v = known[name](dataclasses.replace(data, params=dict(params.get(name, {}))))
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
