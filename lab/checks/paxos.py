"""Paxos's properties (single-decree and Multi-Paxos), checked on the trace and the client answers.

Both cores trace ``commit {slot, ...}`` each time a node learns that a slot's
value is chosen: single-decree Paxos (slot 0) with the ``value`` itself (and
the ``ballot`` a majority accepted it in, or ``via``, the node that told it),
Multi-Paxos with the command's ``hash`` (``nodes.protocols.kv.command_hash``).
A single-decree learner keeps counting after it has learned, so a second
value chosen in a later ballot is traced too.

* agreement: no slot is learned with two different values, anywhere; for
  single-decree Paxos, no client is answered a value other than the one
  learned (``propose`` and ``read`` answers in the history).
* validity: only proposed values are learned. Single-decree: a value some
  proposer took as its input (``state {role: proposer, phase: input}``) or a
  client asked to propose (a ``request`` event). Multi-Paxos: the command of
  some client request (by hash), or a new leader's no-op.
* decided (single-decree, liveness): every learner learned a value by the end
  of the run. The duelling-proposers scenario without backoff expects it
  violated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, RunData, Verdict
from lab.errors import CheckError
from nodes.protocols import kv
from nodes.protocols.synod import LEARNER, roles_of

SHOW = 5
NOOP_HASH = kv.command_hash(None)


def _commits(trace: list[dict[str, Any]]) -> Iterator[tuple[int, str, int, Any, dict[str, Any]]]:
    """(line, node, slot, what was learned, data) of every commit event. What was learned is
    the value (single-decree) or the command's hash (Multi-Paxos)."""
    for line, e in enumerate(trace, 1):
        if e.get("ev") != "commit" or e.get("node") == "lab":
            continue
        data = e.get("data")
        if not isinstance(data, dict) or "slot" not in data or not ("value" in data or "hash" in data):
            raise CheckError(f"trace event {line}: a Paxos commit needs slot and value or hash, "
                             f"got {data!r}")
        yield line, str(e.get("node")), data["slot"], data.get("hash", data.get("value")), data


def _paxos_trace(trace: list[dict[str, Any]]) -> bool:
    return any(e.get("ev") in ("state", "commit") and e.get("node") != "lab" for e in trace)


def _no_events(name: str, run: RunData) -> Verdict | None:
    if not _paxos_trace(run.trace):
        return Verdict(name, UNKNOWN, "no Paxos state or commit events in the trace")
    return None


def _answers(history: list[dict[str, Any]]) -> Iterator[tuple[Any, Any]]:
    """(process, value) of every ok answer to a single-decree propose or read."""
    for h in history:
        if h.get("type") == "ok" and h.get("f") in ("propose", "read") and h.get("value") is not None:
            yield h.get("process"), h.get("value")


def agreement(run: RunData) -> Verdict:
    name = "agreement"
    if (v := _no_events(name, run)) is not None:
        return v
    first: dict[int, tuple[Any, str]] = {}        # slot -> (learned, who)
    bad: list[dict[str, Any]] = []
    learned = 0
    for line, node, slot, what, _ in _commits(run.trace):
        learned += 1
        seen = first.setdefault(slot, (what, node))
        if seen[0] != what and len(bad) < SHOW:
            bad.append({"slot": slot, "a": seen[1], "learned_a": seen[0], "b": node,
                        "learned_b": what, "line": line})
    single = set(first) == {0} and not any("hash" in d for *_, d in _commits(run.trace))
    if single and not bad:
        chosen = first[0][0]
        for process, value in _answers(run.history):
            if value != chosen and len(bad) < SHOW:
                bad.append({"slot": 0, "a": first[0][1], "learned_a": chosen,
                            "b": f"client {process}", "learned_b": value})
    if bad:
        b = bad[0]
        return Verdict(name, VIOLATED, f"slot {b['slot']}: {b['a']} learned {b['learned_a']!r}, "
                       f"{b['b']} learned {b['learned_b']!r}", {"violations": bad})
    if not first:
        return Verdict(name, HOLDS, "nothing was learned", {"slots": 0})
    return Verdict(name, HOLDS, f"{len(first)} slots learned ({learned} times), one value each",
                   {"slots": len(first), "learned": learned})


def _inputs(trace: list[dict[str, Any]]) -> tuple[set[Any], set[str]]:
    """(values proposers took or clients asked to propose, hashes of the commands clients sent)."""
    values: set[Any] = set()
    hashes = {NOOP_HASH}
    for e in trace:
        ev, data = e.get("ev"), e.get("data")
        if not isinstance(data, dict):
            continue
        if ev == "state" and data.get("role") == "proposer" and data.get("phase") == "input":
            values.add(_hashable(data.get("value")))
        elif ev == "request" and isinstance(data.get("op"), dict):
            op = data["op"]
            if op.get("f") == "propose":
                values.add(_hashable(op.get("value")))
            elif kv.validate(op) is None:
                hashes.add(kv.command_hash(kv.encode_command(op)))
    return values, hashes


def _hashable(v: Any) -> Any:
    return repr(v) if isinstance(v, (list, dict)) else v


def validity(run: RunData) -> Verdict:
    name = "validity"
    if (v := _no_events(name, run)) is not None:
        return v
    values, hashes = _inputs(run.trace)
    bad: list[dict[str, Any]] = []
    count = 0
    for line, node, slot, what, data in _commits(run.trace):
        count += 1
        ok = what in hashes if "hash" in data else _hashable(what) in values
        if not ok and len(bad) < SHOW:
            bad.append({"node": node, "slot": slot, "learned": what, "line": line})
    if bad:
        b = bad[0]
        return Verdict(name, VIOLATED, f"{b['node']} learned {b['learned']!r} in slot {b['slot']}, "
                       "which no proposer or client proposed", {"violations": bad})
    return Verdict(name, HOLDS, f"{count} values learned, each one proposed",
                   {"learned": count, "proposed": len(values) + len(hashes) - 1})


def _learners(run: RunData) -> list[str]:
    """The learner nodes the scenario names, else every node that traced a Paxos event."""
    nodes = run.scenario.get("nodes") if isinstance(run.scenario, dict) else None
    if isinstance(nodes, int) and not isinstance(nodes, bool):
        return [f"n{i}" for i in range(1, nodes + 1)]
    if isinstance(nodes, list) and nodes:
        out = []
        for n in nodes:
            spec = n if isinstance(n, dict) else {"name": n}
            if LEARNER in roles_of(spec):
                out.append(str(spec.get("name")))
        return out
    return sorted({str(e.get("node")) for e in run.trace
                   if e.get("ev") in ("state", "commit") and e.get("node") != "lab"})


def decided(run: RunData) -> Verdict:
    name = "decided"
    if (v := _no_events(name, run)) is not None:
        return v
    learned: dict[str, Any] = {}
    for _, node, _, what, _ in _commits(run.trace):
        learned.setdefault(node, what)
    learners = _learners(run)
    missing = [n for n in learners if n not in learned]
    ballots = {tuple(e["data"]["ballot"]) for e in run.trace
               if e.get("ev") == "state" and isinstance(e.get("data"), dict)
               and e["data"].get("role") == "proposer" and isinstance(e["data"].get("ballot"), list)
               and e["data"].get("phase") == "preparing"}
    data = {"learners": len(learners), "undecided": missing, "ballots_tried": len(ballots)}
    if missing:
        if len(missing) == len(learners):
            return Verdict(name, VIOLATED, f"no learner learned a value: {len(ballots)} ballots were "
                           "tried and none was chosen (proposers kept pre-empting each other?)", data)
        return Verdict(name, VIOLATED, f"{', '.join(missing)} never learned the value "
                       f"({len(learners) - len(missing)} of {len(learners)} learners did)", data)
    values = sorted({repr(v) for v in learned.values()})
    return Verdict(name, HOLDS, f"all {len(learners)} learners learned {', '.join(values)} "
                   f"({len(ballots)} ballots tried)", data)


PROTOCOLS = ("paxos", "multipaxos")     # whose checks these are (lab/checks/registry.py)
TRACE_LINES = {"agreement": frozenset({"commit", "state"}),
               "validity": frozenset({"commit", "state", "request"}),   # what clients asked
               "decided": frozenset({"commit", "state"})}
CHECKS: dict[str, Checker] = {
    "agreement": agreement,
    "validity": validity,
    "decided": decided,
}
