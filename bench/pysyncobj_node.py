"""One PySyncObj node for the Raft anchor (run as a child process by bench/pysyncobj_bench.py).

Modes, run by every node; only the leader submits, the others serve until it is done
(a follower's command waits for the next append round, ~200 ms by default, so
submitting at the leader is PySyncObj's best case, and the same place zlab's
client writes to):

* ``window W SPAN``: keep W commands in flight (each completion submits the next), warm
  up for bench/ratesearch.WARMUP s, then count completions over SPAN s: ops/s achieved;
* ``seq COUNT 0``: COUNT commands one after another, each latency.

Prints one JSON line with its figures.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.ratesearch import WARMUP  # noqa: E402 -- run as a script: the repo root on the path first


class Counter(SyncObj):
    def __init__(self, me: str, others: list[str], journal: str, batch: bool) -> None:
        conf = SyncObjConf(journalFile=journal, appendEntriesUseBatch=batch)
        super().__init__(me, others, conf)
        self.applied = 0

    @replicated
    def bump(self, value: str) -> None:
        self.applied += 1


def _window(obj: Counter, window: int, span: float) -> dict[str, float]:
    slots = threading.BoundedSemaphore(window)
    done = [0, 0]       # ok, failed

    def finished(_res: object, err: int) -> None:
        done[0 if err == FAIL_REASON.SUCCESS else 1] += 1
        slots.release()

    start = time.perf_counter()
    warm_end, end = start + WARMUP, start + WARMUP + span
    ok0 = t0 = None
    while True:
        now = time.perf_counter()
        if ok0 is None and now >= warm_end:
            ok0, t0 = done[0], now
        if now >= end:
            break
        if slots.acquire(timeout=0.05):
            obj.bump("v" * 10, callback=finished)
    ok1, t1 = done[0], time.perf_counter()
    return {"ops_per_s": (ok1 - ok0) / (t1 - t0), "failed": done[1]}


def _sequential(obj: Counter, count: int) -> list[float]:
    samples = []
    done_evt = threading.Event()
    for _ in range(count):
        done_evt.clear()
        t = time.perf_counter()
        obj.bump("v" * 10, callback=lambda _r, _e: done_evt.set())
        if done_evt.wait(5):
            samples.append(time.perf_counter() - t)
    return samples


def main() -> None:
    mode, a, b, me, journal, *others = sys.argv[1:]
    # "seq" is PySyncObj's own latency set-up: appendEntriesUseBatch=False.
    obj = Counter(me, others, journal, batch=(mode != "seq"))
    deadline = time.time() + 20
    while obj._getLeader() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    out: dict[str, object] = {"leader": str(obj._getLeader())}
    leads = out["leader"] == me
    flag = os.path.join(os.path.dirname(journal), "leader-done")
    if not leads:
        deadline = time.time() + 120
        while not os.path.exists(flag) and time.time() < deadline:
            time.sleep(0.05)
    elif mode == "window":
        out.update(_window(obj, int(a), float(b)))
    else:
        out.update(samples=_sequential(obj, int(a)))
    if leads:
        open(flag, "w").close()
    print(json.dumps(out), flush=True)
    obj.destroy()


if __name__ == "__main__":
    main()
