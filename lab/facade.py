"""A lab for a test or a script: start it, call it, break it, judge it.

    from zlab import Lab

    with Lab("topologies/raft-5.yaml", backend="docker") as lab:
        old = lab.wait_for_leader()
        lab.put("x", 1)
        lab.partition(old, "rest")
        ...
        lab.assert_safe()

:class:`Lab` is the runner's own machinery behind a small surface, on any
runtime (``sim``, ``local``, ``docker``):

* client calls go through :class:`lab.runner.Clients` (routing, ``not_leader``
  retries, timeouts) and are recorded in a Jepsen history as they happen; each
  blocks until its outcome is recorded -- in virtual time on ``sim``, so the
  same test code replays exactly from its seed there;
* faults are steps of the YAML timeline (:func:`lab.topology.parse_fault`
  checks them), applied by a :class:`lab.faultplan.FaultPlan` now or ``at`` a
  time from now, with the same symbolic targets (``leader``, ``minority``,
  ``crashed``, ``rest``, ...);
* :meth:`Lab.check` runs the scenario's checks (:func:`lab.runner.judge`) over
  the history and trace so far, after Jepsen's final reads; :meth:`Lab.save`
  writes the run directory ``zlab run`` writes (lab/report.py).

The scenario's own ``workload`` and ``faults`` are not run: the test's calls
are the workload and its fault calls the timeline. docs/lab.md is the reference.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from lab import report
from lab.backends import backend_class
from lab.backends.base import Backend
from lab.checks.base import Verdict
from lab.errors import ConfigError, LabError, Unavailable, Unknown
from lab.faultplan import FaultPlan
from lab.history import FAIL, INFO, OK, History
from lab.runner import Clients, RunResult, derive_seeds, judge, merge_trace
from lab.scenario import FaultStep, Scenario, WorkloadSpec
from lab.workloads import Workload
from lab.workloads.registry import kinds as workload_kinds
from lab.workloads.registry import workload_for
from lab.workloads.transfer import transfer_op

POLL = 0.05                 # s between looks at the nodes' status while waiting for a leader
# Which workload knows the final ops of a client call (Jepsen's final reads).
_WORKLOAD_OF = {"read": "kv", "write": "kv", "cas": "kv", "delete": "kv",
                "transfer": "transfer", "broadcast": "broadcast"}
_NOTE = ("made by zlab.Lab: the operations and faults came from the test's own calls, not from "
         "the topology's workload and fault timeline")


class WaitTimeout(LabError, TimeoutError):
    """What a Lab waited for (a leader) did not come in time."""


class Unsafe(LabError, AssertionError):
    """:meth:`Lab.assert_safe` found a verdict other than the scenario expects. ``verdicts``
    holds them all and ``run_dir`` the run directory written for the failure."""

    def __init__(self, message: str, verdicts: Verdicts, run_dir: Path) -> None:
        super().__init__(message)
        self.verdicts, self.run_dir = verdicts, run_dir


class Verdicts(dict[str, Verdict]):
    """Check name -> :class:`~lab.checks.base.Verdict`, plus what ``zlab run`` would conclude."""

    def __init__(self, result: RunResult) -> None:
        super().__init__((v.check, v) for v in result.verdicts)
        self.result = result
        self.exit_code = result.exit_code       # 0 as expected, 1 one differs, 2 one undecided

    @property
    def ok(self) -> bool:
        """Every verdict is the one the scenario expects (by default: holds)."""
        return self.exit_code == 0

    @property
    def violated(self) -> list[str]:
        return [name for name, v in self.items() if v.verdict == "violated"]

    def __str__(self) -> str:
        return "\n".join(report.verdict_lines(self.values(), self.result.scenario.expect))


class Status(dict[str, dict[str, Any]]):
    """Node -> ``{"state": up|paused|crashed|no answer, **the core's status()}``; prints as a table."""

    def __str__(self) -> str:
        cols: dict[str, None] = {"state": None}
        for row in self.values():
            cols.update(dict.fromkeys(row))
        rows = [["node", *cols]] + [[n, *(_cell(row.get(c)) for c in cols)] for n, row in self.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def worker_id() -> str:
    """The pytest-xdist worker running this process (``main`` outside xdist)."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def unique_lab_name(base: str) -> str:
    """``<base>-<xdist worker>-<random>``: never the same for two tests, workers or sessions."""
    from lab.backends.docker import docker_name
    return docker_name(f"{base[:24]}-{worker_id()}-{uuid.uuid4().hex[:6]}")


def load_topology(topology: str | os.PathLike[str] | Scenario,
                  config: Mapping[str, Any] | None = None) -> Scenario:
    """A scenario from a YAML path, YAML text (anything with a newline) or a Scenario, with
    ``config`` laid over its protocol config (``{"bugs": ["no_election_restriction"]}``)."""
    from lab.topology import load_scenario, load_scenario_text
    if isinstance(topology, Scenario):
        scenario = topology
    elif isinstance(topology, str) and "\n" in topology:
        scenario = load_scenario_text(topology)
    else:
        scenario = load_scenario(os.fspath(topology))
    if config:
        from nodes.protocols import get
        from nodes.protocols.core import ConfigValueError, build_config
        merged = {**scenario.config, **config}
        try:
            build_config(get(scenario.protocol), merged)
        except ConfigValueError as e:
            raise ConfigError(e.message, field=f"config.{e.field}") from None
        scenario = dataclasses.replace(scenario, config=merged)
    return scenario


def _duration(value: Any) -> Any:
    """A duration as YAML writes it: numbers are seconds here (as for time.sleep)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from lab.topology import duration_text
        return duration_text(float(value))
    return value


def _seconds(value: Any, what: str = "timeout") -> float | None:
    """Seconds from a number or a duration string (``"150ms"``); ConfigError names ``what``."""
    if value is None:
        return None
    if isinstance(value, str):
        from nodes.units import parse_duration
        try:
            return parse_duration(value)
        except ValueError as e:
            raise ConfigError(str(e), field=what) from None
    return float(value)


class Lab:
    """A running lab of ``topology`` on ``backend`` (``sim``, ``local`` or ``docker``).

    ``seed``: the lab's one seed (default: the topology's, else 1). ``config``: protocol
    settings laid over the topology's (``bugs``, timeouts). ``timeout``: how long a client
    call waits for its outcome (default: the topology's ``workload.timeout``). ``results``:
    where :meth:`save` makes run directories (default ``results/``, as ``zlab run``).
    ``workdir``: the nodes' files (default: a temporary directory removed by :meth:`stop`).
    Other keywords go to the backend (``image=`` for docker, ``lab=`` its name).
    """

    def __init__(self, topology: str | os.PathLike[str] | Scenario, backend: str = "local",
                 seed: int | None = None, *, config: Mapping[str, Any] | None = None,
                 timeout: float | str | None = None, results: str | os.PathLike[str] | None = None,
                 workdir: str | os.PathLike[str] | None = None, time_limit: float = 30.0,
                 **backend_kwargs: Any) -> None:
        self.scenario = load_topology(topology, config)
        self.kind = backend
        self.seed = seed if seed is not None else (
            self.scenario.seed if self.scenario.seed is not None else 1)
        self.results = Path(results) if results is not None else Path(report.RESULTS)
        self.time_limit = time_limit
        seeds = derive_seeds(self.seed)
        cls = backend_class(backend)
        if "lab" in inspect.signature(cls).parameters:     # the simulator has no lab name
            backend_kwargs.setdefault("lab", unique_lab_name(self.scenario.name))
        self.name: str = backend_kwargs.get("lab", self.scenario.name)
        self._tmp = None if workdir is not None else tempfile.mkdtemp(prefix=f"zlab-{self.name}-")
        try:
            self.backend: Backend = cls(self.scenario, seeds["backend"],
                                        os.fspath(workdir or self._tmp), **backend_kwargs)
        except BaseException:
            self._remove_tmp()
            raise
        self.history = History()
        self.clients = Clients(self.backend, self.scenario, None, random.Random(seeds["workload"]),
                               self.history)
        if timeout is not None:
            self.clients.timeout = _seconds(timeout) or self.clients.timeout
        self.plan = FaultPlan(self.scenario, self.backend, random.Random(seeds["faults"]))
        self._wl_rng = random.Random(seeds["workload"] ^ 1)
        self._workloads: dict[str, Workload | None] = {}
        self._slot: Any = None
        self._applied: list[FaultStep] = []
        self._final: dict[str, Any] = {}
        self.started = self.stopped = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Lab:
        """Start every node and return once each answers."""
        if not self.started:
            try:
                self.backend.start()
            except BaseException:
                self._remove_tmp()
                raise
            self.started = True
            self._slot = self.clients.client()
        return self

    def stop(self) -> None:
        """Stop every node and remove what the lab made (its run directories stay). Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.backend.stop()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _running(self) -> None:
        if not self.started or self.stopped:
            raise LabError(f"lab {self.name} is not running (use `with Lab(...) as lab` or start())")

    @property
    def nodes(self) -> list[str]:
        return self.scenario.node_names

    # -- time ------------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the lab began starting: the clock of its trace and history (virtual
        on ``sim``)."""
        return self.backend.now()

    def sleep(self, seconds: float | str) -> None:
        """Let the lab run for ``seconds`` (``0.5`` or ``"500ms"``): use it, not time.sleep,
        so that scheduled faults fire, and so that ``sim`` moves its virtual clock."""
        self._running()
        self.backend.run_until(self.backend.now() + (_seconds(seconds, "sleep") or 0.0))

    # -- client calls ----------------------------------------------------------------------------
    def call(self, op: Mapping[str, Any], *, node: str | None = None,
             timeout: float | str | None = None) -> dict[str, Any]:
        """Send one client op (``{"f": "write", "key": "x", "value": 1}``) and wait for its
        outcome, recorded in the history; the ``ok`` answer. ``node``: a node name or target
        (``leader``) to ask first; redirects are followed. Raises :class:`Unavailable` for a
        ``fail`` outcome, :class:`Unknown` for ``info`` (no answer within ``timeout``)."""
        self._running()
        op = {"key": None, "value": None, **op}
        wl = self._workload(str(op.get("f")))
        if wl is not None:
            wl.observe(op)
        first = self._one(node) if node is not None else None
        res = self.clients.call(self._slot, op, node=first, timeout=_seconds(timeout))
        kind = res.get("type")
        if kind == OK:
            return res
        error = res.get("error")
        what = _describe(op)
        if kind == FAIL:
            raise Unavailable(f"{what}: failed ({error or 'no reason given'}); it did not take effect",
                              op=op, outcome=FAIL, error=error)
        raise Unknown(f"{what}: outcome unknown ({error or 'no reason given'}); it may or may not "
                      "take effect", op=op, outcome=INFO, error=error)

    def put(self, key: Any, value: Any, **kw: Any) -> None:
        """Write ``value`` to ``key``."""
        self.call({"f": "write", "key": key, "value": value}, **kw)

    def get(self, key: Any, **kw: Any) -> Any:
        """The value of ``key`` (None when absent)."""
        return self.call({"f": "read", "key": key}, **kw).get("value")

    def cas(self, key: Any, old: Any, new: Any, **kw: Any) -> bool:
        """Set ``key`` to ``new`` if it holds ``old``; False when it did not (nothing changed)."""
        return self._yes_no({"f": "cas", "key": key, "value": [old, new]}, "cas_mismatch", kw)

    def delete(self, key: Any, **kw: Any) -> None:
        self.call({"f": "delete", "key": key}, **kw)

    def transfer(self, src: int, dst: int, amount: int, **kw: Any) -> bool:
        """Move ``amount`` from account ``src`` to ``dst`` (2PC, 3PC): True when the transaction
        committed, False when it aborted (a participant voted no, e.g. too little money)."""
        return self._yes_no(transfer_op(src, dst, amount), "aborted", kw)

    def _yes_no(self, op: dict[str, Any], no: str, kw: dict[str, Any]) -> bool:
        """True for ``ok``; False for the ``fail`` whose error is ``no`` (a definite answer)."""
        try:
            self.call(op, **kw)
        except Unavailable as e:
            if e.error == no:
                return False
            raise
        return True

    def broadcast(self, value: Any, **kw: Any) -> Any:
        """Hand ``value`` to the gossip layer to spread (``{f: broadcast, value: v}``)."""
        return self.call({"f": "broadcast", "value": value}, **kw).get("value")

    def _workload(self, f: str) -> Workload | None:
        """The workload that knows the final ops after ``f`` calls (kv reads every key touched)."""
        return self._workload_of_kind(_WORKLOAD_OF.get(f))

    def _workload_of_kind(self, kind: str | None) -> Workload | None:
        if kind is None or kind not in workload_kinds():
            return None
        if kind not in self._workloads:
            spec = self.scenario.workload
            spec = spec if spec.kind == kind else WorkloadSpec(kind=kind)
            self._workloads[kind] = workload_for(spec, self.scenario, self._wl_rng)
        return self._workloads[kind]

    # -- faults --------------------------------------------------------------------------------------
    def fault(self, step: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        """Apply one step of the YAML timeline, given as YAML writes it, now or ``at`` a time from
        now: ``lab.fault({"crash": "leader"})``, ``lab.fault(partition=[["n1"], "rest"],
        at="150ms", duration="2s")`` (``duration`` is YAML's ``for``). Returns what it hit
        (see the verbs); None for a step scheduled later."""
        self._running()
        raw = {**(step or {}), **kw}
        if "duration" in raw:
            raw["for"] = raw.pop("duration")
        raw = {k: v for k, v in raw.items() if v is not None}
        later = _seconds(raw.pop("at", None), "at") or 0.0
        if "for" in raw:
            raw["for"] = _duration(raw["for"])
        from lab.topology import parse_fault
        action = next((k for k in raw if k not in ("for", "oneway")), "fault")
        parsed = parse_fault({"at": "0s", **raw}, self.scenario, where=f"lab.{action}()")
        if later > 0:
            self.backend.call_at(self.backend.now() + later, lambda: self._apply(parsed))
            return None
        return self._apply(parsed)

    def _apply(self, step: FaultStep) -> Any:
        step = dataclasses.replace(step, at=round(self.now(), 6))
        self._applied.append(step)
        first = len(self.plan.events)
        self.plan.apply(step)
        hit = [ev["data"] for ev in self.plan.events[first:]
               if ev["data"]["phase"] == "apply" and not ev["data"].get("skipped")]
        if step.action == "partition":
            return hit[0]["target"] if hit else []
        if step.action == "heal":
            return None
        if step.action in ("crash", "restart", "pause", "resume"):
            return [d["target"] for d in hit]
        return [tuple(d["target"]) for d in hit]

    def partition(self, *groups: Any, oneway: bool = False, at: Any = None,
                  duration: Any = None) -> list[list[str]]:
        """Split the nodes: ``partition(["n1", "n2"], ["n3", "n4", "n5"])``,
        ``partition("leader", "rest")``, ``partition("minority", "majority")``; one group alone
        is set against the rest. The groups it made."""
        args: Any = list(groups) if len(groups) != 1 else groups[0]
        return self.fault(partition=args, oneway=oneway or None, at=at, duration=duration)

    def heal(self, what: str = "all", *, at: Any = None) -> None:
        """Remove partitions and link faults (``all``), or only ``partition`` or ``links``."""
        self.fault(heal=what, at=at)

    def crash(self, target: Any, *, at: Any = None, duration: Any = None) -> list[str]:
        """SIGKILL ``target`` (a node, ``leader``, ``coordinator``, ``random``, ``minority``,
        a list); durable state survives. The nodes crashed (none when the target matched no
        node right now, e.g. no leader mid-election)."""
        return self.fault(crash=target, at=at, duration=duration)

    def restart(self, target: Any = "crashed", *, at: Any = None) -> list[str]:
        """Start crashed nodes again from their durable state; returns once they answer."""
        return self.fault(restart=target, at=at)

    def pause(self, target: Any, *, at: Any = None, duration: Any = None) -> list[str]:
        return self.fault(pause=target, at=at, duration=duration)

    def resume(self, target: Any = "paused", *, at: Any = None) -> list[str]:
        return self.fault(resume=target, at=at)

    def delay(self, delay: Any, *, jitter: Any = None, distribution: str | None = None,
              **where: Any) -> list[tuple[str, str]]:
        """Delay messages (``"100ms"``) on every link, or those ``from_=``/``to=`` (both
        directions unless ``oneway=True``) or ``nodes=`` (in or out of them). The links shaped."""
        extra = {"jitter": _duration(jitter), "distribution": distribution}
        return self._link("delay", {"delay": _duration(delay), **extra}, **where)

    def loss(self, loss: str, **where: Any) -> list[tuple[str, str]]:
        """Drop a share (``"5%"``) of the messages; where as for :meth:`delay`."""
        return self._link("loss", {"value": loss}, **where)

    def duplicate(self, share: str, **where: Any) -> list[tuple[str, str]]:
        return self._link("duplicate", {"value": share}, **where)

    def reorder(self, share: str, **where: Any) -> list[tuple[str, str]]:
        return self._link("reorder", {"value": share}, **where)

    def rate(self, rate: str, **where: Any) -> list[tuple[str, str]]:
        """Limit the bit rate (``"1mbit"``); where as for :meth:`delay`."""
        return self._link("rate", {"rate": rate}, **where)

    def _link(self, action: str, settings: dict[str, Any], *, from_: Any = None, to: Any = None,
              nodes: Any = None, oneway: bool = False, at: Any = None,
              duration: Any = None) -> list[tuple[str, str]]:
        where = {"from": from_, "to": to, "nodes": nodes}
        args = {**{k: v for k, v in where.items() if v is not None},
                **{k: v for k, v in settings.items() if v is not None}}
        return self.fault({action: args}, oneway=oneway or None, at=at, duration=duration)

    def _one(self, target: str) -> str:
        hit = self.plan.targets.resolve(target)
        if not hit:
            raise ConfigError(f"{target!r} matches no node right now", field="node")
        return hit[0]

    # -- looking -------------------------------------------------------------------------------------
    def leader(self) -> str | None:
        """The up node that reports ``role: leader`` with the highest term, if any. The lab's
        client sends its next call there first."""
        self._running()
        found = self.plan.targets.leader()
        if found is not None:
            self._slot.leader = found
        return found

    def wait_for_leader(self, timeout: float | str = 10.0, *, exclude: Any = ()) -> str:
        """Let the lab run until a leader (not one of ``exclude``) reports itself; its name,
        where the next call goes first. Raises :class:`WaitTimeout` (a TimeoutError) after
        ``timeout``."""
        skip = {exclude} if isinstance(exclude, str) else set(exclude)

        def new_leader() -> str | None:
            found = self.plan.targets.leader()
            return found if found not in skip else None

        found = self.wait_until(new_leader, timeout, what="a leader" + (
            f" other than {', '.join(sorted(skip))}" if skip else ""))
        self._slot.leader = found
        return found

    def wait_until(self, condition: Callable[[], Any], timeout: float | str = 10.0, *,
                   what: str | None = None) -> Any:
        """Let the lab run, asking ``condition()`` every 50 ms, until it returns something true;
        that. Raises :class:`WaitTimeout` (a TimeoutError, with the status table) after
        ``timeout``: ``lab.wait_until(lambda: lab.status()["p2"]["open"] == 0, timeout=5)``."""
        self._running()
        wait = _seconds(timeout) or 0.0
        end = self.backend.now() + wait
        while True:
            found = condition()
            if found:
                return found
            if self.backend.now() >= end:
                raise WaitTimeout(f"waited {wait:g}s for {what or 'the condition'} in vain\n"
                                  f"{self.status()}")
            self.backend.run_until(min(end, self.backend.now() + POLL))

    def status(self) -> Status:
        """Every node's state and its core's status(); ``print(lab.status())`` shows a table."""
        self._running()
        out = Status()
        for n in self.nodes:
            state = "crashed" if n in self.plan.crashed else "paused" if n in self.plan.paused else "up"
            core = self.backend.status(n) if state == "up" else None
            if state == "up" and core is None:
                state = "no answer"
            out[n] = {"state": state, **(core or {})}
        return out

    def trace(self) -> list[dict[str, Any]]:
        """Every trace event so far: the nodes' and the lab's fault events, in time order."""
        return merge_trace(self.backend.trace_events(), self.plan.events)

    # -- verdicts ------------------------------------------------------------------------------------
    def check(self, final_reads: bool = True) -> Verdicts:
        """The scenario's checks over the history and trace so far. With ``final_reads``
        (Jepsen's), first heal every fault in force (partitions, link faults, paused and
        crashed nodes), let the lab settle (the topology's ``settle``, as a run does, faults
        or not) and read back what the
        calls touched (every key) and what the topology's workload reads at the end of a run
        (2PC/3PC balances, SWIM views), recorded like any other call."""
        self._running()
        if final_reads:
            # As `zlab run` does: heal, then let the lab settle even with nothing to heal (an
            # eventually consistent protocol is still spreading what it acknowledged).
            self.plan.revert_all(close=False)
            self.sleep(self.scenario.settle)
            # The topology's own workload reads back too (balances, a membership's views).
            self._workload_of_kind(self.scenario.workload.kind)
            final: dict[str, Any] = {}
            for wl in self._workloads.values():
                if wl is not None:
                    final.update(wl.record_final(self.clients.run_final(wl.final_ops())))
            self._final = final
        return Verdicts(self._judge())

    def assert_safe(self, final_reads: bool = True) -> Verdicts:
        """:meth:`check`, and when a verdict is not the expected one (by default: holds), write
        the run directory (:meth:`save`) and raise :class:`Unsafe` (an AssertionError) with
        each checker's detail and that directory's path."""
        verdicts = self.check(final_reads)
        if verdicts.ok:
            return verdicts
        run_dir = self.save(verdicts.result)
        differ = [v for v in verdicts.values()
                  if v.verdict != self.scenario.expect.get(v.check, "holds")]
        head = (f"{self.scenario.name} on {self.kind} (seed {self.seed}): "
                f"{', '.join(v.check for v in differ)} not as expected")
        raise Unsafe(f"{head}\n{verdicts}\nrun directory: {run_dir}\n"
                     f"  (report.md, trace.jsonl, history.jsonl, trace.perfetto.json, plots.png)",
                     verdicts, run_dir)

    def save(self, result: RunResult | None = None, out: str | os.PathLike[str] | None = None) -> Path:
        """Write the run directory ``zlab run`` writes -- scenario.yaml (as the lab ran it),
        trace, history, checks, metrics, report.md, the views and node logs -- under
        ``results`` (or exactly ``out``); its path. ``result``: a :meth:`check`'s, else the
        checks run now without final reads."""
        self._running()
        result = result if result is not None else self._judge()
        result.run_dir = run_dir = report.make_run_dir(self.scenario.name, out, root=self.results)
        report.write_data(run_dir, result.resolved, result.trace, result.history, result.final,
                          self.backend.node_logs())
        report.write_metrics(run_dir, result.metrics)
        report.write_report(result)
        return run_dir.resolve()

    def _judge(self) -> RunResult:
        ran = self._as_ran()
        trace = self.trace()
        resolved = report.resolved_scenario(ran, self.seed, self.kind)
        workloads = [w for w in self._workloads.values() if w is not None]
        result = judge(ran, self.kind, self.seed, Path(self.results), resolved, trace,
                       list(self.history.events), dict(self._final), counts=self.clients.counts,
                       notes=[*self.backend.notes(), _NOTE], duration=max(self.now(), 1e-6),
                       workloads=workloads, time_limit=self.time_limit)
        result.replay = _replay(self.seed)
        return result

    def _as_ran(self) -> Scenario:
        """The scenario as this lab ran it: its faults are the ones the test applied, when
        they applied; its workload is the test's calls (none of the topology's)."""
        spec = WorkloadSpec(kind="none", clients=1, duration=round(self.now(), 6),
                            timeout=self.clients.timeout)
        return dataclasses.replace(self.scenario, faults=list(self._applied), workload=spec,
                                   seed=self.seed)


def _describe(op: Mapping[str, Any]) -> str:
    f = op.get("f")
    if f == "transfer":
        return f"transfer {op.get('amount')} from {op.get('from')} to {op.get('to')}"
    if f in ("write", "cas"):
        return f"{f} {op.get('key')!r} {op.get('value')!r}"
    return f"{f} {op.get('key')!r}" if op.get("key") is not None else f"{f} {op.get('value')!r}"


def _replay(seed: int) -> str:
    """How to run a Lab's test again: the pytest node id when pytest runs it."""
    current = os.environ.get("PYTEST_CURRENT_TEST")
    if current:
        return f"pytest '{current.rsplit(' (', 1)[0]}'  (seed {seed})"
    return f"run the script again (seed {seed})"
