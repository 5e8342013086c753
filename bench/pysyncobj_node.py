"""One PySyncObj node for the Raft anchor (run as a child process by bench/pysyncobj_bench.py).

Modes: ``load RPS SECONDS`` submits RPS commands per second for SECONDS in
one-second bursts, PySyncObj's own benchmark method; ``seq COUNT`` -- run by
every node -- has the leader submit COUNT commands one after another and
report each latency while the others serve until it is done (a follower's
command waits for the next append round, ~200 ms by default, so submitting at
the leader is PySyncObj's best case, and the same place zlab's client writes
to). Prints one JSON line with its figures.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated


class Counter(SyncObj):
    def __init__(self, me: str, others: list[str], journal: str, batch: bool) -> None:
        conf = SyncObjConf(journalFile=journal, appendEntriesUseBatch=batch)
        super().__init__(me, others, conf)
        self.applied = 0

    @replicated
    def bump(self, value: str) -> None:
        self.applied += 1


def main() -> None:
    mode, a, b, me, journal, *others = sys.argv[1:]
    # "seq" is PySyncObj's own latency set-up: appendEntriesUseBatch=False.
    obj = Counter(me, others, journal, batch=(mode != "seq"))
    deadline = time.time() + 20
    while obj._getLeader() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    out: dict[str, object] = {"leader": str(obj._getLeader())}
    if mode == "load":
        rps, seconds = int(a), float(b)
        ok = [0, 0]

        def done(_res: object, err: int) -> None:
            ok[0 if err == FAIL_REASON.SUCCESS else 1] += 1

        sent = 0
        start = time.time()
        while time.time() - start < seconds:
            burst = time.time()
            for _ in range(rps):
                obj.bump("v" * 10, callback=done)
                sent += 1
            time.sleep(max(0.0, 1.0 - (time.time() - burst)))
        time.sleep(2.0)
        out.update(sent=sent, ok=ok[0], failed=ok[1])
    elif mode == "seq":
        flag = os.path.join(os.path.dirname(journal), "seq-done")
        if str(obj._getLeader()) != me:
            deadline = time.time() + 120
            while not os.path.exists(flag) and time.time() < deadline:
                time.sleep(0.05)
        else:
            samples = []
            done_evt = threading.Event()
            for _ in range(int(a)):
                done_evt.clear()
                t = time.perf_counter()
                obj.bump("v" * 10, callback=lambda _r, _e: done_evt.set())
                if done_evt.wait(5):
                    samples.append(time.perf_counter() - t)
            out.update(samples=samples)
            open(flag, "w").close()
    print(json.dumps(out), flush=True)
    obj.destroy()


if __name__ == "__main__":
    main()
