"""Running one scenario end to end: the piece that ties the lab together.

    backend.start()
    t0 = now: the workload's clients and the fault timeline are scheduled (times relative to t0)
    run_until(t0 + duration)
    revert every fault (heal cuts, reset links, resume paused, restart crashed)
    run_until(+ settle); the workload's final reads
    collect the trace (the backend's events + the plan's fault events); backend.stop()
    checks -> run directory -> summary

Clients follow Jepsen: each client slot is a single-threaded *process* with at
most one operation in flight. An answer-less operation is recorded as
``info`` when its timeout runs out, and the slot goes on as a fresh process
(the old one stays "in flight" forever as far as the checkers know).
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import metrics, report
from lab.backends import backend_class
from lab.backends.base import Backend
from lab.checks.base import RunData
from lab.checks.registry import run_checks
from lab.clientrule import Tally, Targets, client_rule_of
from lab.faultplan import FaultPlan
from lab.history import FAIL, INFO, OK, History, client_name
from lab.runresult import RunResult
from lab.scenario import Scenario
from lab.tracefile import merge
from lab.workloads import Workload
from lab.workloads.registry import workload_for

# Retry pacing after a not_leader answer: a hinted leader is tried almost at once; with no
# hint (mid-election) the client waits a little, so a leaderless cluster is not flooded.
RETRY_HINTED = 0.002
RETRY_UNKNOWN = 0.05
MAX_ATTEMPTS = 200          # per operation: bounded even if the nodes redirect in a loop
UNAVAILABLE = "unavailable"  # the error of an op every node it tried refused (no leader to take it)
FINAL_ATTEMPTS = 3          # tries of each final read before its last outcome stands
# A closed-loop client never issues two ops at one instant: with a zero-latency runtime
# that would let a client spin without virtual time moving.
MIN_GAP = 0.001
PROGRESS_EVERY = 0.5


def derive_seeds(seed: int) -> dict[str, int]:
    """One stream per consumer, so that (say) adding a fault does not change the workload."""
    master = random.Random(seed)
    return {name: master.getrandbits(63) for name in ("workload", "faults", "backend")}


# -- clients ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    process: int
    busy: bool = False
    leader: str | None = None
    last_invoke: float = -1.0


@dataclass
class _Op:
    slot: _Slot
    op: dict[str, Any]
    client: str
    seq: int
    invoked: float
    deadline: float
    attempt: int = 0
    node: str | None = None
    done: bool = False
    on_done: Callable[[dict[str, Any]], None] | None = None
    tally: Tally | None = None               # under a core's client rule: the answers so far
    signed: dict[str, Any] | None = None     # the request as sent, signed once


class Clients:
    """The client processes of one run: routing, retries, timeouts and the history."""

    def __init__(self, backend: Backend, scenario: Scenario, workload: Workload | None,
                 rng: random.Random, history: History) -> None:
        self.backend = backend
        self.scenario = scenario
        self.workload = workload
        self.rng = rng
        self.history = history
        self.spec = scenario.workload
        self.timeout = self.spec.timeout
        per_client = 1 if self.spec.rate else (self.spec.concurrency or 1)
        n = (self.spec.clients * per_client) if workload is not None and workload.client_ops else 0
        self.slots = [_Slot(process=history.fresh_process()) for _ in range(n)]
        self.counts = {"ok": 0, "fail": 0, "info": 0, "skipped": 0, "invoked": 0}
        self.leader: str | None = None                    # last leader any client saw
        # A core's own client rule (PBFT: f+1 matching replies, requests signed, sent first to
        # the primary and f more, then to every replica); None keeps the default path: one
        # answer, not_leader redirects. The clients share what they learn of the primary.
        self.rule = client_rule_of(scenario)
        self.targets = Targets(self.rule, scenario.node_names) if self.rule is not None else None
        self._signer: Any = None            # the lab's client key, once the backend made it
        self._seq = 0
        self._end = 0.0
        self._planned = 0.0                               # the open loop's next arrival

    # -- driving -----------------------------------------------------------------------------
    def start(self, t0: float, duration: float) -> None:
        self._end = t0 + duration
        if not self.slots:
            return
        if self.spec.rate:
            self._planned = t0 + self.rng.expovariate(self.spec.rate)
            self.backend.call_at(self._planned, self._arrival)
        else:
            for slot in self.slots:
                self.backend.call_at(t0, lambda s=slot: self._issue(s))

    def _arrival(self) -> None:
        """One arrival of the open loop's Poisson process. The next is planned from this one's
        planned time, not from when it ran: on a busy machine a late arrival is caught up,
        and the offered rate stays the scenario's (on the simulator the two are the same)."""
        if self._planned >= self._end:
            return
        idle = [s for s in self.slots if not s.busy]
        if idle:
            self._issue(self.rng.choice(idle))
        else:
            self.counts["skipped"] += 1
        self._planned += self.rng.expovariate(self.spec.rate)
        if self._planned < self._end:
            self.backend.call_at(self._planned, self._arrival)

    def _issue(self, slot: _Slot) -> None:
        now = self.backend.now()
        if slot.busy or now >= self._end or self.workload is None:
            return
        op = self.workload.next_op(slot.process)
        self.invoke(slot, op, node=self.workload.node_for(op))

    def _after(self, slot: _Slot) -> None:
        """A slot's op finished: a closed-loop client goes straight on."""
        if self.spec.rate:
            return
        t = max(self.backend.now(), slot.last_invoke + MIN_GAP)
        if t < self._end:
            self.backend.call_at(t, lambda: self._issue(slot))

    # -- one operation -------------------------------------------------------------------------
    def invoke(self, slot: _Slot, op: dict[str, Any], *, node: str | None = None,
               on_done: Callable[[dict[str, Any]], None] | None = None,
               timeout: float | None = None) -> _Op:
        now = self.backend.now()
        self._seq += 1
        slot.busy = True
        slot.last_invoke = now
        deadline = now + (self.timeout if timeout is None else timeout)
        state = _Op(slot, dict(op), client_name(slot.process), self._seq, now, deadline, on_done=on_done)
        self.history.invoke(slot.process, op["f"], op.get("key"), op.get("value"), now)
        self.counts["invoked"] += 1
        self.backend.call_at(state.deadline, lambda: self._timeout(state))
        self._send(state, node or slot.leader or self._random_node())
        return state

    def _random_node(self, avoid: str | None = None) -> str:
        names = self.scenario.node_names
        choices = [n for n in names if n != avoid] or names
        return self.rng.choice(choices)

    def _send(self, state: _Op, node: str) -> None:
        if self.rule is not None:
            self._send_all(state)
            return
        state.attempt += 1
        state.node = node
        attempt = state.attempt
        msg = {**state.op, "client": state.client, "seq": state.seq}
        self.backend.submit(node, msg, lambda res: self._result(state, attempt, node, res))

    def _send_all(self, state: _Op) -> None:
        """Under a core's client rule: the request to the nodes of this attempt (``Targets``),
        again (``targets.retry_later``) until enough of them answered alike (or the op's timeout)."""
        rule, targets = self.rule, self.targets
        assert rule is not None and targets is not None
        state.attempt += 1
        if state.tally is None:
            state.tally = Tally(rule.replies)
            msg = {**state.op, "client": state.client, "seq": state.seq}
            if rule.sign:
                self._signer = self._signer or self.backend.client_signer()
                msg = self._signer.sign_request(msg)
            state.signed = msg
        for node in targets.of(state.attempt):
            self.backend.submit(node, state.signed, lambda res, node=node: self._vote(state, node, res))
        if state.attempt < MAX_ATTEMPTS:
            targets.retry_later(self.backend.now, self.backend.call_at, lambda: not state.done,
                                lambda: self._send_all(state), state.deadline)

    def _vote(self, state: _Op, node: str, res: dict[str, Any]) -> None:
        if not state.done and state.tally is not None and state.tally.add(node, res):
            assert self.targets is not None
            self.targets.learn(res)
            self.targets.observe(self.backend.now() - state.invoked, state.attempt)
            self._outcome(state, node, res)

    def _result(self, state: _Op, attempt: int, node: str, res: dict[str, Any]) -> None:
        if state.done:
            return              # an answer after the timeout, or to an older attempt: too late
        kind = res.get("type")
        if kind == FAIL and res.get("error") == "not_leader":
            if attempt != state.attempt:
                return          # a newer attempt is already on its way
            hint = res.get("leader")
            hint = hint if hint in self.scenario.node_names and hint != node else None
            state.slot.leader = hint
            delay = RETRY_HINTED if hint else RETRY_UNKNOWN
            now = self.backend.now()
            if state.attempt >= MAX_ATTEMPTS or now + delay >= state.deadline:
                # Every attempt was answered, each time "not me": no node took the op, so it
                # definitely did not happen (one attempt is in flight at a time).
                self._finish(state, FAIL, state.op.get("value"),
                             {"type": FAIL, "error": UNAVAILABLE, "leader": hint})
                return
            target = hint or self._random_node(avoid=node)
            self.backend.call_at(now + delay, lambda: None if state.done else self._send(state, target))
            return
        self._outcome(state, node, res)

    def _outcome(self, state: _Op, node: str, res: dict[str, Any]) -> None:
        kind = res.get("type")
        if kind == OK:
            state.slot.leader = node
            self.leader = node
            self._finish(state, OK, self._ok_value(state.op, res), res)
        elif kind == FAIL:
            # Jepsen keeps the invocation's value on a failed op, and the error beside it.
            self._finish(state, FAIL, state.op.get("value"), res)
        else:                   # info, or an answer we cannot read: the outcome is unknown
            self._finish(state, INFO, None, res)

    @staticmethod
    def _ok_value(op: dict[str, Any], res: dict[str, Any]) -> Any:
        """The ok event's value: what was read, or what the invocation carried for updates."""
        if op.get("f") in ("write", "cas", "delete"):
            return op.get("value")
        return res.get("value", op.get("value"))

    def _timeout(self, state: _Op) -> None:
        if not state.done:
            self._finish(state, INFO, None, {"type": "info", "error": "timeout"})

    def _finish(self, state: _Op, kind: str, value: Any, res: dict[str, Any]) -> None:
        state.done = True
        slot = state.slot
        now = self.backend.now()
        self.history.complete(slot.process, kind, value, now,
                              error=res.get("error") if kind == FAIL else None)
        self.counts[kind] += 1
        if kind == INFO:
            slot.process = self.history.fresh_process()
            slot.leader = None
        slot.busy = False
        if state.on_done is not None:
            state.on_done(res)
        else:
            self._after(slot)

    # -- one operation at a time ------------------------------------------------------------------
    def client(self) -> _Slot:
        """A fresh client process for operations made one after the other with :meth:`call`."""
        return _Slot(process=self.history.fresh_process(), leader=self.leader)

    def call(self, slot: _Slot, op: dict[str, Any], *, node: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Invoke ``op`` as ``slot`` and run the backend until its outcome is recorded; the
        answer (``{"type": "info", "error": "timeout"}`` when none came in time). Blocks for
        at most the op's timeout: in virtual time on the simulator, real time elsewhere."""
        box: list[dict[str, Any]] = []
        state = self.invoke(slot, op, node=node, on_done=box.append, timeout=timeout)
        # The op's own timeout callback ends it; the margin only covers that callback's turn.
        self.backend.wait_for(lambda: bool(box), state.deadline - self.backend.now() + 0.001)
        if not box:
            self._timeout(state)
        return box[0]

    # -- final reads --------------------------------------------------------------------------
    def run_final(self, ops: list[tuple[str | None, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Jepsen's final reads: the workload's final ops, one after the other once the faults
        are healed and the cluster settled, each recorded in the history like any other
        operation (so a write acknowledged and then lost shows in ``linearizable``). An op
        that does not come back ``ok`` is tried again, up to ``FINAL_ATTEMPTS`` times; every
        attempt is in the history. Returns the last answer to each op."""
        results: list[dict[str, Any]] = []
        slot = self.client()
        for node, op in ops:
            res: dict[str, Any] = {"type": INFO, "error": "timeout"}
            for _ in range(FINAL_ATTEMPTS):
                res = self.call(slot, op, node=node)
                if res.get("type") == OK:
                    break
            results.append(res)
        return results


# -- the run ------------------------------------------------------------------------------------


def workload_duration(scenario: Scenario) -> float:
    """The workload's duration; a run without one lasts until a second after its last fault."""
    if scenario.workload.duration > 0:
        return scenario.workload.duration
    ends = [f.at + (f.duration or 0.0) for f in scenario.faults]
    return (max(ends) + 1.0) if ends else 1.0


def check_names(checks: list[str], expect: dict[str, str], protocol: str) -> list[str]:
    """The scenario's checks, else the protocol's defaults; plus any check it only names in expect."""
    names = list(checks)
    if not names:
        try:
            from nodes.protocols import get
            names = list(get(protocol).default_checks)
        except (KeyError, ImportError):
            names = []
    return names + [n for n in expect if n not in names]


def run_scenario(scenario: Scenario, backend_kind: str = "sim", seed: int | None = None,
                 out: str | Path | None = None, progress: bool = False,
                 quiet: bool = False, time_limit: float = 30.0, write: bool = True,
                 views: bool = True) -> RunResult:
    """Run ``scenario`` on ``backend_kind`` and write its run directory; see the module doc.

    ``write=False`` keeps everything in memory (schedule sweeps on the simulator): no run
    directory is made unless ``out`` names one for the backend's own files. ``views=False``
    writes the run directory without its views (plots, perfetto, space-time)."""
    if seed is None:
        seed = scenario.seed if scenario.seed is not None else random.SystemRandom().randrange(2**31)
    say = (lambda *_a, **_k: None) if quiet else print
    say(f"zlab: running {scenario.name} on {backend_kind} with seed {seed}", flush=True)
    seeds = derive_seeds(seed)
    scratch = None          # a real backend's node data when nothing is written: never shared
    if write:
        run_dir = report.make_run_dir(scenario.name, out)
    elif out is not None:
        run_dir = Path(out)
    elif backend_kind == "sim":
        run_dir = Path(tempfile.gettempdir())        # the simulator writes nothing there
    else:
        run_dir = scratch = Path(tempfile.mkdtemp(prefix=f"zlab-{scenario.name}-"))
    cls = backend_class(backend_kind)
    backend: Backend = cls(scenario, seeds["backend"], str(run_dir))
    history = History()
    wl_rng = random.Random(seeds["workload"])
    workload = workload_for(scenario.workload, scenario, wl_rng)
    clients = Clients(backend, scenario, workload, wl_rng, history)
    plan = FaultPlan(scenario, backend, random.Random(seeds["faults"]))
    duration = workload_duration(scenario)
    final: dict[str, Any] = {}
    live = None
    try:
        backend.start()
        t0 = backend.now()
        clients.start(t0, duration)
        plan.schedule(t0, until=duration)
        if progress and backend_kind != "sim":
            live = _Progress(backend, clients, plan, t0)
            live.start()
        backend.run_until(t0 + duration)
        plan.revert_all()
        backend.run_until(backend.now() + scenario.settle)
        if workload is not None:
            final = workload.record_final(clients.run_final(workload.final_ops()))
        history.close(backend.now())
        trace = merge_trace(backend.trace_events(), plan.events)
        logs = backend.node_logs()
        notes = list(backend.notes())
    finally:
        if live is not None:
            live.stop()
        backend.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    resolved = report.resolved_scenario(scenario, seed, backend_kind)
    level = getattr(backend, "trace_level", "all")
    if level != "all":      # the checks must know what the trace leaves out (checks/registry.py)
        resolved["trace"] = level
    if write:   # the evidence first: a checker that hangs or crashes still leaves it
        report.write_data(run_dir, resolved, trace, history.events, final, logs)
    result = judge(scenario, backend_kind, seed, run_dir, resolved, trace, history.events, final,
                   counts=clients.counts, notes=notes, duration=duration,
                   workloads=[workload] if workload is not None else [], time_limit=time_limit)
    if write:
        report.write_metrics(run_dir, result.metrics)
        report.write_report(result, views=views)
    if not quiet:
        print(report.summary(result), flush=True)
    return result


def judge(scenario: Scenario, backend_kind: str, seed: int, run_dir: Path,
          resolved: dict[str, Any], trace: list[dict[str, Any]], history: list[dict[str, Any]],
          final: dict[str, Any], *, counts: dict[str, int], notes: list[str], duration: float,
          workloads: list[Workload], time_limit: float = 30.0) -> RunResult:
    """The scenario's checks, figures and metrics over what a run recorded (nothing written)."""
    data = RunData(scenario=resolved, trace=trace, history=history, final=final,
                   time_limit=time_limit)
    verdicts, code = run_checks(
        check_names(scenario.checks, scenario.expect, scenario.protocol), data, scenario.expect,
        scenario.check_params)
    stats = report.run_stats(trace, history, counts)
    figures = metrics.generic(trace, history, scenario.node_names, duration)
    for workload in workloads:
        figures.update(workload.metrics(trace, history, final))
    return RunResult(scenario, backend_kind, seed, run_dir, verdicts, code, stats, resolved,
                     trace, history, final, notes, figures)


def merge_trace(backend_events: list[dict[str, Any]],
                lab_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backend's events and the plan's, ordered by (ts, node); ties keep each list's order."""
    return merge([backend_events, lab_events])


class _Progress:
    """A one-line live status (rich) for runs in real time."""

    def __init__(self, backend: Backend, clients: Clients, plan: FaultPlan, t0: float) -> None:
        self.backend, self.clients, self.plan, self.t0 = backend, clients, plan, t0
        self.live: Any = None
        self.stopped = False

    def start(self) -> None:
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:
            return
        self.live = Live(self._text(), console=Console(file=sys.stderr), transient=True,
                         auto_refresh=False)
        self.live.start()
        self.backend.call_at(self.backend.now() + PROGRESS_EVERY, self._tick)

    def _text(self) -> str:
        c = self.clients.counts
        leader = self.plan.targets.leader() if self.live is not None else None
        faults = ", ".join(self.plan.active()) or "none"
        return (f"{self.backend.now() - self.t0:6.1f}s  ok {c['ok']}  fail {c['fail']}  "
                f"info {c['info']}  leader {leader or '-'}  faults: {faults}")

    def _tick(self) -> None:
        if self.stopped or self.live is None:
            return
        self.live.update(self._text(), refresh=True)
        self.backend.call_at(self.backend.now() + PROGRESS_EVERY, self._tick)

    def stop(self) -> None:
        self.stopped = True
        if self.live is not None:
            self.live.stop()
