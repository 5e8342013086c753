"""The linearizability checker on hand-made and generated key-value histories."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData
from lab.checks.linearizable import CHECKS, check, check_events, check_history_file, check_ops
from lab.errors import CheckError
from lab.history import pair_ops, write_history

_next_process = iter(range(10**9))


def op(f, key, value, start, end, outcome="ok", result=None, process=None):
    """Two events (one if ``end`` is None: never answered). ``result`` is what a read saw."""
    p = next(_next_process) if process is None else process
    inv = {"process": p, "type": "invoke", "f": f, "key": key, "value": value, "ts": start}
    if end is None:
        return [inv]
    out = result if f == "read" else value
    return [inv, {"process": p, "type": outcome, "f": f, "key": key, "value": out, "ts": end}]


def history(*ops):
    events = [ev for pair in ops for ev in pair]
    return sorted(events, key=lambda ev: (ev["ts"], ev["type"] != "invoke"))


def w(key, v, a, b, outcome="ok"):
    return op("write", key, v, a, b, outcome)


def r(key, v, a, b, outcome="ok"):
    return op("read", key, None, a, b, outcome, result=v)


def cas(key, exp, new, a, b, outcome="ok"):
    return op("cas", key, [exp, new], a, b, outcome)


def verdict(*ops, time_limit=10.0):
    return check_events(history(*ops), time_limit=time_limit)


# -- linearizable by hand ------------------------------------------------------------

@pytest.mark.parametrize("ops", [
    (),
    (r("x", None, 0, 1),),
    (w("x", 1, 0, 1), r("x", 1, 2, 3)),
    (w("x", 1, 0, 10), r("x", None, 1, 2), r("x", 1, 3, 4)),      # read during the write
    (w("x", 1, 0, 2), w("x", 2, 1, 3), r("x", 1, 4, 5)),          # concurrent writes: 2 then 1
    (w("x", 1, 0, 1), cas("x", 1, 2, 2, 3), r("x", 2, 4, 5), op("delete", "x", None, 6, 7),
     r("x", None, 8, 9)),
    (w("x", 1, 0, 1), cas("x", 5, 2, 2, 3, "fail"), r("x", 1, 4, 5)),
    (w("x", {"a": [1, 2]}, 0, 1), r("x", {"a": [1, 2]}, 2, 3)),
    (w("x", 1, 0, 1), r("x", 1, 1, 2)),                           # touching intervals: concurrent
])
def test_linearizable_histories_hold(ops):
    v = verdict(*ops)
    assert v.verdict == HOLDS, v.detail


def test_checks_registry_and_run_data():
    assert CHECKS == {"linearizable": check}
    run = RunData(scenario={}, trace=[], history=history(w("x", 1, 0, 1), r("x", 2, 2, 3)))
    v = check(run)
    assert v.check == "linearizable" and v.verdict == VIOLATED


# -- anomalies --------------------------------------------------------------------

def test_stale_read_is_violated_with_counterexample():
    v = verdict(w("a", 1, 0, 1), r("a", 1, 1.5, 2),
                w("x", 1, 0, 1), w("x", 2, 2, 3), r("x", 1, 4, 5))
    assert v.verdict == VIOLATED
    assert v.data["key"] == "x" and v.data["violated_keys"] == ["x"]
    cx = v.data["counterexample"]
    assert cx["stuck"]["f"] == "read" and cx["stuck"]["result"] == 1
    assert cx["prefix_length"] == 2 and cx["state"] == 2
    assert [o["value"] for o in cx["prefix"]] == [1, 2]
    assert "'x'" in v.detail and "read" in v.detail
    json.dumps(v.as_dict())                                   # checks.json must take it


def test_lost_write_is_violated():
    v = verdict(w("y", 1, 0, 1), r("y", 1, 2, 3), w("k", 7, 0, 1), r("k", None, 2, 3))
    assert v.verdict == VIOLATED and v.data["key"] == "k"


def test_cas_anomaly_is_violated():
    # Both cas(1 -> x) cannot succeed: only one of them saw 1.
    v = verdict(w("c", 1, 0, 1), cas("c", 1, 2, 2, 3), cas("c", 1, 3, 4, 5))
    assert v.verdict == VIOLATED and v.data["key"] == "c"
    # A cas that succeeded but whose effect a later read does not see.
    v = verdict(w("c", 1, 0, 1), cas("c", 1, 2, 2, 3), r("c", 1, 4, 5))
    assert v.verdict == VIOLATED


def test_read_of_never_written_value_is_violated():
    v = verdict(w("z", 1, 0, 1), r("z", 42, 2, 3), r("q", None, 0, 1))
    assert v.verdict == VIOLATED and v.data["key"] == "z"
    assert "could have written" in v.detail
    # A value written only after the read returned counts as never written for it.
    v = verdict(r("z", 5, 0, 1), w("z", 5, 2, 3))
    assert v.verdict == VIOLATED


def test_fail_did_not_happen():
    assert verdict(w("x", 5, 0, 1, "fail"), r("x", 5, 2, 3)).verdict == VIOLATED
    assert verdict(w("x", 5, 0, 1, "fail"), r("x", None, 2, 3)).verdict == HOLDS


def test_real_time_order_is_respected():
    # The write of 2 finished before the write of 1 began: 1 is the last value.
    assert verdict(w("x", 2, 0, 1), w("x", 1, 2, 3), r("x", 2, 4, 5)).verdict == VIOLATED
    # A read that returned before a write began cannot see it, even on another read's account.
    assert verdict(w("x", 1, 0, 1), r("x", 1, 2, 3), w("x", 2, 4, 5), r("x", 1, 6, 7)).verdict \
        == VIOLATED


# -- info ---------------------------------------------------------------------------

def test_info_write_may_have_happened():
    with_info = verdict(w("x", 5, 0, 1, "info"), r("x", 5, 10, 11))
    assert with_info.verdict == HOLDS
    never_answered = verdict(w("x", 5, 0, None), r("x", 5, 10, 11))
    assert never_answered.verdict == HOLDS
    without = verdict(r("x", 5, 10, 11))
    assert without.verdict == VIOLATED and without.data["key"] == "x"


def test_info_write_may_not_have_happened():
    assert verdict(w("x", 5, 0, 1, "info"), r("x", None, 10, 11)).verdict == HOLDS


def test_info_takes_effect_only_after_its_invocation():
    # Read of 5 returned before the info write of 5 was even invoked.
    assert verdict(r("x", 5, 0, 1), w("x", 5, 2, 3, "info")).verdict == VIOLATED


def test_info_write_can_take_effect_late():
    # The info write lands after a later ok write: 3 then 5.
    v = verdict(w("x", 5, 0, 1, "info"), w("x", 3, 2, 3), r("x", 3, 4, 5), r("x", 5, 6, 7))
    assert v.verdict == HOLDS


def test_info_write_takes_effect_at_most_once():
    v = verdict(w("x", 5, 0, 1, "info"), w("x", 3, 2, 3), r("x", 5, 4, 5), w("x", 4, 6, 7),
                r("x", 5, 8, 9))
    assert v.verdict == VIOLATED
    # Two equal info writes may both land.
    v = verdict(w("x", 5, 0, 1, "info"), w("x", 5, 0, 1, "info"), w("x", 3, 2, 3),
                r("x", 5, 4, 5), w("x", 4, 6, 7), r("x", 5, 8, 9))
    assert v.verdict == HOLDS


def test_info_cas_needs_its_compare():
    assert verdict(w("x", 1, 0, 1), cas("x", 1, 2, 2, 3, "info"), r("x", 2, 4, 5)).verdict == HOLDS
    assert verdict(w("x", 1, 0, 1), cas("x", 9, 2, 2, 3, "info"), r("x", 2, 4, 5)).verdict \
        == VIOLATED


def test_info_reads_are_ignored():
    assert verdict(r("x", 77, 0, 1, "info"), w("x", 1, 0, 1)).verdict == HOLDS


# -- generated histories ---------------------------------------------------------------

@st.composite
def sequential_runs(draw):
    """A real sequential execution on two keys, each op given a window around its true point."""
    n = draw(st.integers(1, 40))
    state: dict[str, int | None] = {}
    events = []
    written = 0
    for i in range(n):
        key = draw(st.sampled_from(["a", "b"]))
        f = draw(st.sampled_from(["read", "read", "write", "cas", "delete"]))
        info = draw(st.integers(0, 9)) == 0
        happened = not info or draw(st.booleans())
        start = 4 + i - draw(st.floats(0, 4, allow_nan=False))
        end = 4 + i + draw(st.floats(0, 4, allow_nan=False))
        cur = state.get(key)
        outcome = "info" if info else "ok"
        if f == "read":
            events += op("read", key, None, start, end, outcome, result=cur)
        elif f == "write":
            written += 1
            if happened:
                state[key] = written
            events += op("write", key, written, start, end, outcome)
        elif f == "delete":
            if happened:
                state.pop(key, None)
            events += op("delete", key, None, start, end, outcome)
        else:
            exp = draw(st.sampled_from([cur, written, None]))
            written += 1
            if exp != cur and not info:
                outcome = "fail"
            elif happened and exp == cur:
                state[key] = written
            events += op("cas", key, [exp, written], start, end, outcome)
    return sorted(events, key=lambda ev: (ev["ts"], ev["type"] != "invoke"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequential_runs(), st.data())
def test_real_sequential_executions_are_linearizable_and_corruption_is_caught(events, data):
    v = check_events(events, time_limit=20)
    assert v.verdict == HOLDS, (v.detail, events)
    ok_reads = [i for i, ev in enumerate(events) if ev["type"] == "ok" and ev["f"] == "read"]
    if not ok_reads:
        return
    i = data.draw(st.sampled_from(ok_reads))
    bad = [dict(ev) for ev in events]
    bad[i]["value"] = "never-written"
    v = check_events(bad, time_limit=20)
    assert v.verdict == VIOLATED and v.data["key"] == events[i]["key"]


def simulate(seed, clients=10, n_ops=5000, keys=10, info_p=0.05, window=0.01, values=5):
    """A correct concurrent store: each op takes effect at a point inside its window."""
    rng = random.Random(seed)
    free_at = [rng.random() * window for _ in range(clients)]
    process = list(range(clients))
    next_process = clients
    ops = []
    for _ in range(n_ops):
        c = min(range(clients), key=free_at.__getitem__)
        start = free_at[c]
        point = start + rng.random() * window
        end = point + rng.random() * window
        info = rng.random() < info_p
        ops.append({"p": process[c], "start": start, "point": point, "end": end, "info": info,
                    "happened": not info or rng.random() < 0.5,
                    "f": rng.choice(["read", "read", "write", "cas", "delete"]),
                    "key": f"k{rng.randrange(keys)}", "v": rng.randrange(values),
                    "exp": rng.randrange(values)})
        free_at[c] = end + rng.random() * window
        if info:
            process[c], next_process = next_process, next_process + 1
    store = {}
    for o in sorted(ops, key=lambda o: o["point"]):
        cur = store.get(o["key"])
        o["ok"] = o["f"] != "cas" or cur == o["exp"]
        o["result"] = cur
        if o["happened"] and o["ok"] and o["f"] in ("write", "cas"):
            store[o["key"]] = o["v"]
        elif o["happened"] and o["f"] == "delete":
            store.pop(o["key"], None)
    events = []
    for o in ops:
        value = [o["exp"], o["v"]] if o["f"] == "cas" else o["v"] if o["f"] == "write" else None
        outcome = "info" if o["info"] else "ok" if o["ok"] else "fail"
        events += op(o["f"], o["key"], value, o["start"], o["end"], outcome, o["result"], o["p"])
    return sorted(events, key=lambda ev: (ev["ts"], ev["type"] != "invoke"))


def test_5000_ops_on_10_keys_decided_fast():
    events = simulate(1)
    t0 = time.process_time()          # CPU time: other tests share the machine
    v = check_events(events, time_limit=30)
    elapsed = time.process_time() - t0
    assert v.verdict == HOLDS, v.detail
    assert v.data["ops"] == 5000 and v.data["keys"] == 10
    assert elapsed < 5.0


def test_stale_read_in_a_big_history_is_found():
    events = simulate(2, clients=20, info_p=0.1, values=1000)
    reads = [i for i, ev in enumerate(events)
             if ev["type"] == "ok" and ev["f"] == "read" and ev["value"] is not None]
    i = reads[len(reads) // 2]
    key = events[i]["key"]
    old = next(ev["value"] for ev in events[: i // 2]
               if ev["type"] == "ok" and ev["f"] == "write" and ev["key"] == key
               and ev["value"] != events[i]["value"])
    events[i] = {**events[i], "value": old}
    v = check_events(events, time_limit=30)
    assert v.verdict == VIOLATED and v.data["key"] == key


# -- limits -------------------------------------------------------------------------

def pathological(k=20):
    """k concurrent writes, then two reads that no order of them can satisfy: the search
    has to try every subset of the writes before it can say so."""
    ops = [w("x", i, 0, 100) for i in range(k)]
    ops += [r("x", i, 0, 100) for i in range(k)]
    ops += [r("x", 0, 200, 201), r("x", 1, 202, 203)]
    return history(*ops)


def test_time_limit_gives_unknown():
    t0 = time.monotonic()
    v = check_events(pathological(), time_limit=0.2)
    assert time.monotonic() - t0 < 3.0
    assert v.verdict == UNKNOWN and v.data["unknown_keys"] == ["x"]
    assert "time limit" in v.detail


def test_state_limit_gives_unknown():
    v = check_ops(pair_ops(pathological()), time_limit=30, max_states=5000)
    assert v.verdict == UNKNOWN and "configurations" in v.detail


def test_violation_elsewhere_wins_over_unknown():
    events = pathological() + history(w("y", 1, 0, 1), r("y", 2, 2, 3))
    v = check_events(events, time_limit=0.2)
    assert v.verdict == VIOLATED and v.data["key"] == "y"


def test_small_pathological_case_is_decided():
    assert check_events(pathological(4), time_limit=10).verdict == VIOLATED


# -- files ---------------------------------------------------------------------------

def test_check_history_file(tmp_path):
    path = tmp_path / "history.jsonl"
    write_history(history(w("x", 1, 0, 1), r("x", 1, 2, 3)), path)
    assert check_history_file(path).verdict == HOLDS
    assert check_history_file(path, model="kv", time_limit=1).verdict == HOLDS
    with pytest.raises(CheckError, match="unknown model 'bank'"):
        check_history_file(path, model="bank")
    path.write_text(path.read_text() + "garbage\n")
    with pytest.raises(CheckError, match=r"history.jsonl:5: not JSON"):
        check_history_file(path)


def test_non_kv_operation_is_a_check_error():
    with pytest.raises(CheckError, match="transfer"):
        verdict(op("transfer", "x", 1, 0, 1))
    with pytest.raises(CheckError, match=r"\[expected, new\]"):
        verdict(op("cas", "x", 1, 0, 1))


# -- exactness against brute force ---------------------------------------------------------

def brute_force(ops):
    """Is there an order of the ok ops plus some of the info ops that respects real time and
    the register's semantics? ``ops``: (f, value, result, start, end or None, outcome)."""
    from itertools import combinations, permutations

    ok = [o for o in ops if o[5] == "ok"]
    info = [o for o in ops if o[5] == "info" and o[0] != "read"]
    for k in range(len(info) + 1):
        for extra in combinations(info, k):
            for order in permutations(ok + list(extra)):
                if any(b[4] is not None and b[4] < a[3]
                       for i, a in enumerate(order) for b in order[i + 1:]):
                    continue
                state, good = None, True
                for f, value, result, *_ in order:
                    if f == "read":
                        good = state == result
                    elif f == "write":
                        state = value
                    elif f == "delete":
                        state = None
                    elif state == value[0]:
                        state = value[1]
                    else:
                        good = False
                    if not good:
                        break
                if good:
                    return True
    return False


@st.composite
def small_histories(draw):
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        f = draw(st.sampled_from(["read", "write", "cas", "delete"]))
        start = draw(st.integers(0, 6))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "info"]))
        end = None if outcome == "info" else start + draw(st.integers(0, 4))
        value = [draw(st.sampled_from([None, 1, 2])), draw(st.sampled_from([1, 2]))] \
            if f == "cas" else draw(st.sampled_from([1, 2])) if f == "write" else None
        result = draw(st.sampled_from([None, 1, 2])) if f == "read" else None
        # An info op's own event time (the client's timeout) must not bound it: ignored here.
        info_end = draw(st.sampled_from([None, start + 1]))
        ops.append((f, value, result, start, end, outcome, info_end))
    return ops


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_agrees_with_brute_force(ops):
    events = history(*[op(f, "x", value, start, end if end is not None else info_end, outcome,
                          result) for f, value, result, start, end, outcome, info_end in ops])
    v = check_events(events, time_limit=20)
    assert v.verdict == (HOLDS if brute_force(ops) else VIOLATED), ops
