"""Checkers for atomic commitment (2PC, 3PC) over the transfer workload.

They read the trace events the cores emit (docs/twopc.md, "Trace"):
``state`` ``{txn, role, state}`` on every transition, ``commit`` ``{txn, role,
decision}`` when a node makes an outcome durable, ``apply`` ``{txn, deltas}``
when a participant applies a commit and ``apply`` ``{init: true, balances}``
when it creates its accounts; ``final.json``'s ``balances``; and what the
clients were told: a ``reply`` in the trace to a ``request`` whose op names
the transaction (``<client>.<seq>``), and the history's ``ok``/``fail`` of a
transfer, tied to its transaction through the requests its client sent.

Every party's outcome counts: the coordinator's decision, each participant's,
and the client's answer (``ok`` is a commit it was promised, ``fail aborted``
an abort), so a single-participant transaction is checked as well.

* ``atomicity``: per transaction, nobody committed (or told its client ``ok``)
  while anybody aborted. A participant still undecided at the end is not a
  violation (it may yet learn the outcome) but is counted as blocked.
* ``conservation``: the money in the bank at the end equals the money it
  started with, and no account is negative.
* ``no_commit_after_abort``: nobody -- coordinator or participant -- commits,
  and no client is told ``ok`` for, a transaction that anyone aborted; the
  detail says which came first.
* ``nonblocking``: no participant held a transaction undecided (voted yes,
  locks held, outcome unknown) longer than ``THRESHOLD`` or until the end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, RunData, Verdict
from lab.history import FAIL, INVOKE, OK, client_name
from nodes.protocols.commit import txn_id

COMMITTED, ABORTED = "committed", "aborted"
DECIDED = frozenset({COMMITTED, ABORTED})
# Participant states that hold locks without knowing the outcome (2PC and 3PC).
UNDECIDED = frozenset({"prepared", "ready", "precommitted"})
THRESHOLD = 2.0          # s a participant may stay undecided before it counts as blocked
RESTART_WINDOW = 1.0     # s: blocking that ends this soon after a coordinator restart ended "because" of it
SHOW = 5                 # transactions named in a detail line or kept in data
LABELS = {"twopc": "2PC", "threepc": "3PC"}
CLIENT = "client"        # the party a transaction's client is, beside the nodes


@dataclass
class _Txn:
    """What the trace says of one transaction."""

    states: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    roles: dict[str, str] = field(default_factory=dict)

    def outcome(self, node: str) -> str | None:
        for _, s in reversed(self.states[node]):
            if s in DECIDED:
                return s
        return None

    def first(self, node: str, wanted: Iterable[str]) -> float | None:
        wanted = set(wanted)
        return next((ts for ts, s in self.states[node] if s in wanted), None)

    def participants(self) -> list[str]:
        return sorted(n for n, r in self.roles.items() if r == "participant")


def fields(ev: dict[str, Any]) -> dict[str, Any]:
    """An event's payload: its ``data`` (docs/trace.md)."""
    d = ev.get("data")
    return d if isinstance(d, dict) else {}


def transactions(trace: list[dict[str, Any]]) -> dict[str, _Txn]:
    out: dict[str, _Txn] = {}
    for ev in trace:
        if ev.get("ev") != "state":
            continue
        d = fields(ev)
        tid, state = d.get("txn"), d.get("state")
        if tid is None or state is None:
            continue
        t = out.setdefault(tid, _Txn())
        t.states[ev["node"]].append((float(ev["ts"]), state))
        t.roles[ev["node"]] = d.get("role", "participant")
    return out


def _label(data: RunData) -> str:
    proto = str(data.scenario.get("protocol", ""))
    return LABELS.get(proto, proto or "commit")


def _end(trace: list[dict[str, Any]]) -> float:
    return max((float(e["ts"]) for e in trace), default=0.0)


def _names(items: list[str]) -> str:
    more = f" (+{len(items) - SHOW} more)" if len(items) > SHOW else ""
    return ", ".join(items[:SHOW]) + more


# -- who decided what ------------------------------------------------------------------------

Outcomes = dict[str, dict[str, list[tuple[float, str]]]]   # txn -> party -> [(ts, outcome)] in time order


def _requests(trace: list[dict[str, Any]]) -> tuple[dict[tuple[str, Any], str],
                                                     dict[str, list[tuple[float, str]]]]:
    """(node, client handle) -> txn of every traced transfer request, and the client name of
    each request -> [(ts, txn)]: how answers and history operations find their transaction."""
    by_handle: dict[tuple[str, Any], str] = {}
    by_client: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for ev in trace:
        if ev.get("ev") != "request":
            continue
        d = fields(ev)
        op = d.get("op")
        if not isinstance(op, dict) or op.get("f") != "transfer":
            continue
        tid = txn_id(op)
        if tid is None:
            continue
        by_handle[(ev.get("node"), d.get("client"))] = tid
        by_client[str(op.get("client"))].append((float(ev["ts"]), tid))
    return by_handle, by_client


def _client_outcome(result: Any) -> str | None:
    """What an answer told the client: ``ok`` is a promised commit, ``fail aborted`` an abort."""
    if not isinstance(result, dict):
        return None
    if result.get("type") == OK:
        return COMMITTED
    if result.get("type") == FAIL and result.get("error") == "aborted":
        return ABORTED
    return None


def outcomes(data: RunData) -> Outcomes:
    """Every decision of every party of every transaction: the nodes' decided states, the
    answers the trace shows going to clients, and the history's answers to transfers."""
    return _read(data)[1]


def _outcomes(data: RunData, txns: dict[str, _Txn]) -> Outcomes:
    out: Outcomes = defaultdict(lambda: defaultdict(list))
    for tid, t in txns.items():
        for node, states in t.states.items():
            out[tid][node].extend((ts, s) for ts, s in states if s in DECIDED)
    by_handle, by_client = _requests(data.trace)
    for ev in data.trace:
        if ev.get("ev") == "reply":
            d = fields(ev)
            tid = by_handle.get((ev.get("node"), d.get("client")))
            said = _client_outcome(d.get("result"))
            if tid is not None and said is not None:
                out[tid][CLIENT].append((float(ev["ts"]), said))
    invoked: dict[Any, float] = {}
    for ev in data.history:
        if ev.get("f") != "transfer":
            continue
        if ev.get("type") == INVOKE:
            invoked[ev.get("process")] = float(ev["ts"])
            continue
        # Jepsen's reading: ok happened, fail certainly did not (whatever its error says).
        said = {OK: COMMITTED, FAIL: ABORTED}.get(ev.get("type"))
        start = invoked.pop(ev.get("process"), None)
        if said is None or start is None:
            continue
        end = float(ev["ts"])
        sent = {tid for ts, tid in by_client.get(client_name(ev["process"]), ()) if start <= ts <= end}
        for tid in sorted(sent):
            out[tid][CLIENT].append((end, said))
    for parties in out.values():
        for events in parties.values():
            events.sort()
    return out


# The four checks read the same run one after the other: it is parsed once. The entry holds the
# trace and history it was made from (so neither can be freed and its id reused) and their lengths.
_last: list[Any] = [None, None, 0, 0, None]


def _read(data: RunData) -> tuple[dict[str, _Txn], Outcomes]:
    """(transactions, outcomes) of ``data``'s run, parsed once for all the checks of that run."""
    trace, history = data.trace, data.history
    if (_last[0] is trace and _last[1] is history
            and _last[2] == len(trace) and _last[3] == len(history)):
        return _last[4]
    txns = transactions(trace)
    parsed = (txns, _outcomes(data, txns))
    _last[:] = [trace, history, len(trace), len(history), parsed]
    return parsed


def _party(name: str) -> str:
    return "its client" if name == CLIENT else name


def _split_detail(label: str, tid: str, parties: dict[str, list[tuple[float, str]]]) -> str:
    committed = [p for p, evs in sorted(parties.items()) if any(o == COMMITTED for _, o in evs)]
    aborted = [p for p, evs in sorted(parties.items()) if any(o == ABORTED for _, o in evs)]
    said = []
    nodes = [p for p in committed if p != CLIENT]
    if nodes:
        said.append(f"committed at {', '.join(nodes)}")
    if CLIENT in committed:
        said.append("ok to its client")
    nodes = [p for p in aborted if p != CLIENT]
    if nodes:
        said.append(f"aborted at {', '.join(nodes)}")
    if CLIENT in aborted:
        said.append("aborted to its client")
    return f"{label}: transaction {tid}: {'; '.join(said)}"


# -- atomicity -------------------------------------------------------------------------------

def atomicity(data: RunData) -> Verdict:
    txns, decided = _read(data)
    split: dict[str, dict[str, str]] = {}
    blocked: dict[str, list[str]] = defaultdict(list)
    for tid in sorted(set(txns) | set(decided)):
        parties = decided.get(tid, {})
        seen = {o for evs in parties.values() for _, o in evs}
        if {COMMITTED, ABORTED} <= seen:
            split[tid] = {p: " then ".join(dict.fromkeys(o for _, o in evs))
                          for p, evs in sorted(parties.items()) if evs}
        t = txns.get(tid)
        for p in t.participants() if t is not None else ():
            if t.outcome(p) is None and t.states[p] and t.states[p][-1][1] in UNDECIDED:
                blocked[p].append(tid)
    data_out = {"transactions": len(txns), "split": dict(list(split.items())[:SHOW]),
                "split_count": len(split), "undecided_at_end": dict(blocked)}
    if split:
        tid = next(iter(split))
        more = f" (+{len(split) - 1} more)" if len(split) > 1 else ""
        return Verdict("atomicity", VIOLATED, _split_detail(_label(data), tid, decided[tid]) + more,
                       data_out)
    n_blocked = sum(len(v) for v in blocked.values())
    tail = f"; {n_blocked} still undecided at the end (blocked, not split)" if n_blocked else ""
    return Verdict("atomicity", HOLDS, f"every party agreed in {len(txns)} transactions{tail}",
                   data_out)


# -- conservation --------------------------------------------------------------------------

def initial_total(data: RunData) -> int | None:
    """The bank's money at the start: the participants' own `apply init` events, else final.json."""
    inits: dict[str, int] = {}
    for ev in data.trace:
        d = fields(ev)
        if ev.get("ev") == "apply" and d.get("init"):
            inits.update({str(k): int(v) for k, v in (d.get("balances") or {}).items()})
    if inits:
        return sum(inits.values())
    total = data.final.get("initial_total")
    return int(total) if isinstance(total, int) else None


def conservation(data: RunData) -> Verdict:
    final = data.final or {}
    balances = final.get("balances")
    if not isinstance(balances, dict) or not balances:
        return Verdict("conservation", UNKNOWN, "no final balances (final.json has none)", {})
    if final.get("missing"):
        return Verdict("conservation", UNKNOWN,
                       f"no final balances from {', '.join(final['missing'])} (down or not answering)",
                       {"missing": final["missing"]})
    start = initial_total(data)
    if start is None:
        return Verdict("conservation", UNKNOWN, "the initial balances are not known", {})
    end = sum(int(v) for v in balances.values())
    negative = {k: v for k, v in balances.items() if int(v) < 0}
    # Which transactions made or destroyed money: applied deltas that do not sum to zero.
    applied: dict[str, int] = defaultdict(int)
    for ev in data.trace:
        d = fields(ev)
        if ev.get("ev") == "apply" and "txn" in d:
            applied[d["txn"]] += sum(int(v) for v in (d.get("deltas") or {}).values())
    unbalanced = {t: s for t, s in sorted(applied.items()) if s}
    out = {"initial": start, "final": end, "negative": negative,
           "unbalanced": dict(list(unbalanced.items())[:SHOW]), "unbalanced_count": len(unbalanced)}
    if end != start or negative:
        why = [f"the bank holds {end}, it started with {start}"] if end != start else []
        if negative:
            why.append(f"negative accounts {negative}")
        if unbalanced:
            why.append(f"half-applied: {_names(list(unbalanced))}")
        return Verdict("conservation", VIOLATED, f"{_label(data)}: " + "; ".join(why), out)
    return Verdict("conservation", HOLDS, f"the bank holds {end}, as it started", out)


# -- no commit after abort -------------------------------------------------------------------

def no_commit_after_abort(data: RunData) -> Verdict:
    bad: list[dict[str, Any]] = []
    for tid, parties in sorted(outcomes(data).items()):
        aborts = [(ts, p) for p, evs in parties.items() for ts, o in evs if o == ABORTED]
        commits = [(ts, p) for p, evs in parties.items() for ts, o in evs if o == COMMITTED]
        if aborts and commits:
            (ats, an), (cts, cn) = min(aborts), min(commits)
            bad.append({"txn": tid, "aborted_by": an, "aborted_at": ats, "committed_by": cn,
                        "committed_at": cts, "after": cts > ats})
    out = {"count": len(bad), "examples": bad[:SHOW]}
    if bad:
        b = bad[0]
        when = "after" if b["after"] else "before"
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        what = ("was told ok for" if b["committed_by"] == CLIENT else "committed")
        return Verdict("no_commit_after_abort", VIOLATED,
                       f"{_label(data)}: {_party(b['committed_by'])} {what} {b['txn']} at "
                       f"{b['committed_at']:.3f} s, {when} {_party(b['aborted_by'])} aborted it at "
                       f"{b['aborted_at']:.3f} s{more}", out)
    return Verdict("no_commit_after_abort", HOLDS, "no transaction was both committed and aborted", out)


# -- nonblocking ------------------------------------------------------------------------------

def _union(intervals: list[tuple[float, float]]) -> float:
    total, cur_lo, cur_hi = 0.0, None, None
    for lo, hi in sorted(intervals):
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None:
        total += cur_hi - cur_lo
    return total


def _coordinator_restarts(data: RunData, txns: dict[str, _Txn]) -> list[float]:
    coords = {n for t in txns.values() for n, r in t.roles.items() if r == "coordinator"}
    return [float(e["ts"]) for e in data.trace
            if e.get("ev") == "log" and e.get("node") in coords
            and fields(e).get("msg") == "recovered"]


def nonblocking(data: RunData) -> Verdict:
    """``threshold`` (s, YAML ``{name: nonblocking, threshold: 2s}``): how long a participant
    may stay undecided holding locks before it counts as blocked."""
    threshold = data.params.get("threshold", THRESHOLD)
    txns = _read(data)[0]
    end = _end(data.trace)
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    at_end: dict[str, list[str]] = defaultdict(list)
    longest = (0.0, "", "")
    resolved: list[float] = []          # when blocking that was over the threshold ended
    for tid, t in txns.items():
        for p in t.participants():
            since = t.first(p, UNDECIDED)
            if since is None:
                continue
            decided = t.first(p, DECIDED)
            until = decided if decided is not None else end
            if decided is None:
                at_end[p].append(tid)
            if until - since > threshold or decided is None:
                spans[p].append((since, until))
                if decided is not None:
                    resolved.append(decided)
                if until - since > longest[0]:
                    longest = (until - since, p, tid)
    seconds = {p: round(_union(v), 3) for p, v in sorted(spans.items())}
    out = {"threshold": threshold, "blocked_seconds": seconds,
           "blocked_at_end": {p: sorted(v)[:SHOW] for p, v in sorted(at_end.items())},
           "longest": {"seconds": round(longest[0], 3), "participant": longest[1], "txn": longest[2]}}
    if not spans:
        return Verdict("nonblocking", HOLDS,
                       f"no participant stayed undecided longer than {threshold:g} s", out)
    worst = max(seconds.values())
    detail = (f"{_label(data)}: {len(spans)} participant{'s' if len(spans) != 1 else ''} "
              f"blocked {worst:.1f} s holding locks")
    restarts = _coordinator_restarts(data, txns)
    if resolved and any(r <= max(resolved) <= r + RESTART_WINDOW for r in restarts):
        detail += " until the coordinator restarted"
    if at_end:
        n = sum(len(v) for v in at_end.values())
        detail += f"; {n} transaction{'s' if n != 1 else ''} still blocked at the end"
    return Verdict("nonblocking", VIOLATED, detail, out)

PROTOCOLS = ("twopc", "threepc")     # whose checks these are (lab/checks/registry.py)
# What the clients were told comes from the request and reply lines (_requests, _outcomes).
TRACE_LINES = {"atomicity": frozenset({"state", "log", "request", "reply"}),
               "conservation": frozenset({"apply"}),
               "no_commit_after_abort": frozenset({"state", "log", "request", "reply"}),
               "nonblocking": frozenset({"state", "log", "fault"})}
CHECKS: dict[str, Checker] = {
    "atomicity": atomicity,
    "conservation": conservation,
    "no_commit_after_abort": no_commit_after_abort,
    "nonblocking": nonblocking,
}

PARAMS = {"nonblocking": {"threshold": ("s", "how long a participant may stay undecided, holding "
                                              "locks, before it counts as blocked (default 2s)")}}
