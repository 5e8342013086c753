"""Linearizability of a key-value history (Wing & Gong / Lowe / Porcupine).

The history is split by key first: linearizability is compositional
(P-compositionality), so each key is an independent, much smaller search.
Per key, the search walks a doubly linked list of call and return events in
time order and linearizes operations "just in time": at each call it tries to
apply the operation to the model; reaching a return of an operation not yet
applied means the current order cannot work, so it backtracks. Configurations
already seen -- (set of applied operations, model state) -- are cached and
never explored twice, which is what keeps a correct history of thousands of
operations fast. A time limit turns a search that would not end in time into
an "unknown" verdict. docs/checkers.md explains how to read a counterexample.

``fail`` operations did not happen and are dropped. ``info`` operations may
or may not have happened, at any time after their invocation: they have no
return event, so the search may apply them anywhere after their call, or
never. ``info`` reads constrain nothing and are dropped.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData, Verdict
from lab.errors import CheckError
from lab.history import FAIL, INFO, Op, load_history, pair_ops, process_order

NAME = "linearizable"
MAX_STATES = 2_000_000      # cached configurations per key before giving up (memory bound)
SHOW_OPS = 8                # ops of the prefix and of the stuck frontier shown in a counterexample

# Compiled KV operation kinds.
READ, WRITE, CAS, DELETE = 0, 1, 2, 3
_KINDS = {"read": READ, "write": WRITE, "cas": CAS, "delete": DELETE}


def _canon(value: Any) -> str | None:
    """A hashable, order-free form of a JSON value; None stands for "absent"."""
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _uncanon(state: str | None) -> Any:
    return None if state is None else json.loads(state)


@dataclass(frozen=True)
class _Step:
    kind: int
    a: str | None = None     # read: the value read; write: value; cas: expected
    b: str | None = None     # cas: new value


def _kv_compile(op: Op) -> _Step:
    kind = _KINDS.get(op.f)
    if kind is None:
        raise CheckError(f"kv model has no operation {op.f!r} (expected read, write, cas or delete)")
    if kind == READ:
        return _Step(READ, _canon(op.value_out))
    if kind == WRITE:
        return _Step(WRITE, _canon(op.value_in))
    if kind == CAS:
        v = op.value_in
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise CheckError(f"cas value must be [expected, new], got {v!r} (process {op.process})")
        return _Step(CAS, _canon(v[0]), _canon(v[1]))
    return _Step(DELETE)


def _kv_step(state: str | None, s: _Step) -> tuple[bool, str | None]:
    """Apply one operation to a register; (allowed, new state)."""
    k = s.kind
    if k == READ:
        return state == s.a, state
    if k == WRITE:
        return True, s.a
    if k == CAS:
        return (True, s.b) if state == s.a else (False, state)
    return True, None


def _kv_prune(ops: Sequence[Op], steps: Sequence[_Step]) -> list[int]:
    """Indices of info ops that can be left out without changing the verdict.

    An info op whose resulting value nobody ever observes (no ok read returns
    it, no cas expects it) can always be dropped from a linearization: until
    the next overwrite nothing may depend on that value. Unique written values
    make most info writes such, and each one left out halves the search.
    """
    observed = {s.a for op, s in zip(ops, steps, strict=True)
                if (s.kind == READ and op.outcome != INFO) or s.kind == CAS}
    out = []
    for i, (op, s) in enumerate(zip(ops, steps, strict=True)):
        if op.outcome == INFO:
            new = s.b if s.kind == CAS else (None if s.kind == DELETE else s.a)
            if new not in observed:
                out.append(i)
    return out


def _kv_impossible(ops: Sequence[Op], steps: Sequence[_Step]) -> int | None:
    """An ok op that needs a value no write invoked before its return could produce."""
    first_write: dict[str | None, float] = {None: 0.0}      # the initial value is absent
    for op, s in zip(ops, steps, strict=True):
        new = s.b if s.kind == CAS else (None if s.kind == DELETE else s.a)
        if s.kind != READ and op.invoke_ts < first_write.get(new, float("inf")):
            first_write[new] = op.invoke_ts
    for i, (op, s) in enumerate(zip(ops, steps, strict=True)):
        if op.outcome != INFO and s.kind in (READ, CAS):
            if first_write.get(s.a, float("inf")) > op.complete_ts:
                return i
    return None


@dataclass(frozen=True)
class Model:
    name: str
    init: Any
    compile: Callable[[Op], Any]
    step: Callable[[Any, Any], tuple[bool, Any]]
    show_state: Callable[[Any], Any]
    prune: Callable[[Sequence[Op], Sequence[Any]], list[int]] = lambda ops, steps: []
    impossible: Callable[[Sequence[Op], Sequence[Any]], int | None] = lambda ops, steps: None


MODELS: dict[str, Model] = {
    "kv": Model("kv", None, _kv_compile, _kv_step, _uncanon, _kv_prune, _kv_impossible),
}


@dataclass
class KeyResult:
    verdict: str                       # holds | violated | unknown
    reason: str = ""                   # for unknown: time limit / state limit
    ops: int = 0
    states: int = 0                    # configurations cached
    counterexample: dict[str, Any] = field(default_factory=dict)


def check_key(ops: Sequence[Op], model: Model, deadline: float,
              max_states: int = MAX_STATES) -> KeyResult:
    """Decide whether one key's operations (no ``fail`` ops) are linearizable."""
    steps = [model.compile(op) for op in ops]
    bad = model.impossible(ops, steps)
    if bad is not None:
        return KeyResult(VIOLATED, "", len(ops), 0, {
            "reason": "needs a value that no operation invoked before it returned could have written",
            "prefix_length": 0, "prefix": [], "state": None,
            "stuck": ops[bad].as_dict(), "concurrent": []})
    pruned = set(model.prune(ops, steps))
    if pruned:
        ops = [op for i, op in enumerate(ops) if i not in pruned]
        steps = [st for i, st in enumerate(steps) if i not in pruned]
    n = len(ops)
    required = [0 if op.outcome == INFO else 1 for op in ops]
    # Info ops that do the same thing are interchangeable, so they are applied in
    # invocation order only (an exchange argument: any linearization using k of them can
    # use the k earliest-invoked instead). That turns subsets into counts.
    after: list[int] = [-1] * n          # for info op i: the earlier equal info op, or -1
    last_same: dict[Any, int] = {}
    for i in sorted(range(n), key=lambda i: ops[i].invoke_ts):
        if not required[i]:
            after[i] = last_same.get(steps[i], -1)
            last_same[steps[i]] = i
    # Entries 0..n-1 are calls, n..2n-1 returns (info ops have none). Calls sort before
    # returns at equal ts: touching intervals count as concurrent, the lenient reading.
    entries = [(op.invoke_ts, 0, i) for i, op in enumerate(ops)]
    entries += [(op.complete_ts, 1, n + i) for i, op in enumerate(ops) if required[i]]
    entries.sort()
    head, nil = 2 * n, 2 * n + 1          # sentinels
    nxt = [nil] * (2 * n + 2)
    prv = [head] * (2 * n + 2)
    last = head
    for _, _, e in entries:
        nxt[last], prv[e] = e, last
        last = e
    nxt[last], prv[nil] = nil, last

    def lift(e: int) -> None:
        nxt[prv[e]], prv[nxt[e]] = nxt[e], prv[e]
        r = e + n
        if required[e]:
            nxt[prv[r]], prv[nxt[r]] = nxt[r], prv[r]

    def unlift(e: int) -> None:
        r = e + n
        if required[e]:
            nxt[prv[r]] = r
            prv[nxt[r]] = r
        nxt[prv[e]] = e
        prv[nxt[e]] = e

    step = model.step
    state = model.init
    # The set of linearized ops is cached as a 128-bit Zobrist hash (XOR of one random
    # word per op), not a bitset: constant size and O(1) to update however long the
    # history. Two different sets collide with probability 2**-128 per pair.
    words = random.Random(0x5EED)        # fixed seed: a history is always searched the same way
    zobrist = [words.getrandbits(128) for _ in range(n)]
    done = bytearray(n)
    linearized = 0
    remaining = sum(required)
    stack: list[tuple[int, Any]] = []
    cache: set[tuple[int, Any]] = set()
    best_len = -1
    best: tuple[Any, ...] = ()
    counter = 0
    e = nxt[head]
    while remaining:
        counter += 1
        if not counter & 0x3FF:
            if time.monotonic() > deadline:
                return KeyResult(UNKNOWN, "time limit", n, len(cache))
            if len(cache) > max_states:
                return KeyResult(UNKNOWN, f"more than {max_states} configurations", n, len(cache))
        if e < n:                                  # a call: try to linearize it here
            a = after[e]
            ok, new = step(state, steps[e])
            if a >= 0 and not done[a]:
                ok = False
            if ok:
                config = (linearized ^ zobrist[e], new)
                if config not in cache:
                    cache.add(config)
                    stack.append((e, state))
                    linearized, state = config
                    done[e] = 1
                    lift(e)
                    remaining -= required[e]
                    e = nxt[head]
                    continue
            e = nxt[e]
            continue
        # A return whose op is not linearized: this order is dead, undo the last choice.
        if len(stack) > best_len:
            best_len = len(stack)
            best = _frontier(stack, state, e - n, head, nxt, n)
        if not stack:
            return KeyResult(VIOLATED, "", n, len(cache), _counterexample(ops, model, best))
        e, state = stack.pop()
        linearized ^= zobrist[e]
        done[e] = 0
        remaining += required[e]
        unlift(e)
        e = nxt[e]
    return KeyResult(HOLDS, "", n, len(cache))


def _frontier(stack: list[tuple[int, Any]], state: Any, stuck: int, head: int,
              nxt: list[int], n: int) -> tuple[Any, ...]:
    """A cheap snapshot of the deepest point (it may be taken often): the last ops
    linearized, the state, the op that could not be, and the calls still open before it."""
    pending = []
    e = nxt[head]
    while e != stuck + n and e < 2 * n and len(pending) <= SHOW_OPS:
        if e < n and e != stuck:
            pending.append(e)
        e = nxt[e]
    return len(stack), [i for i, _ in stack[-SHOW_OPS:]], state, stuck, pending


def _counterexample(ops: Sequence[Op], model: Model, best: tuple[Any, ...]) -> dict[str, Any]:
    length, tail, state, stuck, pending = best
    return {
        "prefix_length": length,
        "prefix": [ops[i].as_dict() for i in tail],
        "state": model.show_state(state),
        "stuck": ops[stuck].as_dict(),
        "concurrent": [ops[i].as_dict() for i in pending[:SHOW_OPS]],
    }


def _key_order(key: Any) -> tuple[str, str]:
    return (type(key).__name__, str(key))


def describe_op(op: dict[str, Any]) -> str:
    """``p3 read 'x' -> 5 [1.2, 1.3]`` for a counterexample's op dict."""
    end = "inf" if op["complete_ts"] is None else f"{op['complete_ts']:g}"
    what = f"{op['f']} {op['key']!r}"
    if op["f"] == "read":
        what += f" -> {json.dumps(op['result'])}"
    elif op["f"] in ("write", "cas"):
        what += f" {json.dumps(op['value'])}"
    p = op["process"]
    who = f"p{p}" if isinstance(p, int) else p
    return f"{who} {what} [{op['invoke_ts']:g}, {end}] {op['outcome']}"


def check_ops(ops: Sequence[Op], model: str = "kv", time_limit: float = 30.0,
              max_states: int = MAX_STATES) -> Verdict:
    """Check paired operations; the whole check answers within about ``time_limit`` s."""
    m = MODELS.get(model)
    if m is None:
        raise CheckError(f"unknown model {model!r} for {NAME} (known: {', '.join(sorted(MODELS))})")
    t0 = time.monotonic()
    deadline = t0 + time_limit
    by_key: dict[Any, list[Op]] = {}
    dropped = {"fail": 0, "info_read": 0}
    for op in ops:
        if op.outcome == FAIL:
            dropped["fail"] += 1
        elif op.outcome == INFO and op.f == "read":
            dropped["info_read"] += 1
        else:
            by_key.setdefault(op.key, []).append(op)
    if not by_key:
        return Verdict(NAME, HOLDS, "no operations to check", {"model": model, "ops": 0})
    for key_ops in by_key.values():
        # Ties with unequal order would make the search depend on dict order; sort once.
        key_ops.sort(key=lambda op: (op.invoke_ts, process_order(op.process)))

    results: dict[Any, KeyResult] = {}
    # Small keys first: a violation there is found before a big key eats the time.
    for key in sorted(by_key, key=lambda k: (len(by_key[k]), _key_order(k))):
        if time.monotonic() > deadline:
            results[key] = KeyResult(UNKNOWN, "time limit", len(by_key[key]))
            continue
        results[key] = check_key(by_key[key], m, deadline, max_states)

    keys = sorted(results, key=_key_order)
    violated = [k for k in keys if results[k].verdict == VIOLATED]
    unknown = [k for k in keys if results[k].verdict == UNKNOWN]
    data: dict[str, Any] = {
        "model": model, "ops": len(ops), "keys": len(keys), "dropped": dropped,
        "info": sum(1 for op in ops if op.outcome == INFO),
        "states": sum(r.states for r in results.values()),
        "elapsed": round(time.monotonic() - t0, 3),
        "violated_keys": violated, "unknown_keys": unknown,
    }
    if violated:
        key = violated[0]
        cx = results[key].counterexample
        data["key"] = key
        data["counterexample"] = cx
        if "reason" in cx:
            detail = f"key {key!r}: {describe_op(cx['stuck'])} {cx['reason']}"
        else:
            detail = (f"key {key!r}: {describe_op(cx['stuck'])} cannot be linearized "
                      f"after {cx['prefix_length']} of {results[key].ops} ops "
                      f"(value then {json.dumps(cx['state'])})")
        return Verdict(NAME, VIOLATED, detail, data)
    if unknown:
        reasons = sorted({results[k].reason for k in unknown})
        detail = (f"undecided for {len(unknown)} of {len(keys)} keys ({', '.join(reasons)}; "
                  f"limit {time_limit:g}s)")
        return Verdict(NAME, UNKNOWN, detail, data)
    if not ops:
        return Verdict(NAME, HOLDS, "no client operations in the history: holds vacuously", data)
    return Verdict(NAME, HOLDS, f"{len(ops)} ops on {len(keys)} keys linearizable", data)


def check_events(events: Sequence[dict[str, Any]], model: str = "kv",
                 time_limit: float = 30.0) -> Verdict:
    return check_ops(pair_ops(events), model, time_limit)


def check(run: RunData) -> Verdict:
    return check_events(run.history, "kv", run.params.get("time_limit", run.time_limit))


FORMATS = ("jsonl", "edn")


def check_history_file(path: str | Path, model: str = "kv", time_limit: float = 30.0,
                       fmt: str = "jsonl") -> Verdict:
    """``zlab check --history FILE [--format edn] --model kv``: load, validate, check. ``edn``
    reads Jepsen's history.edn (lab/jepsen_edn.py). A file without a client operation is a
    CheckError: there is nothing to check, and "holds" would say otherwise."""
    if model not in MODELS:
        raise CheckError(f"unknown model {model!r} (known: {', '.join(sorted(MODELS))})")
    if fmt == "edn":
        from lab.jepsen_edn import load_edn_history
        events = load_edn_history(path)
    elif fmt == "jsonl":
        events = load_history(path)
    else:
        raise CheckError(f"unknown history format {fmt!r} (known: {', '.join(FORMATS)})")
    if not events:
        raise CheckError(f"{path}: no client operations in this history: nothing to check")
    return check_events(events, model, time_limit)


CHECKS = {NAME: check}
TRACE_LINES = {NAME: frozenset()}       # the history and the final reads only: any trace level
PARAMS = {NAME: {"time_limit": ("s", "how long the search may take before it answers unknown "
                                     "(exit 2); default 30s, or zlab's --time-limit")}}

__all__ = ["CHECKS", "FORMATS", "MODELS", "PARAMS", "check", "check_events", "check_history_file", "check_key",
           "check_ops", "describe_op"]
