"""The runner on the simulator: client semantics, the run directory, verdicts and exit codes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

import lab.runner as runner
from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData, Verdict
from lab.checks.registry import exit_code, run_checks
from lab.errors import ConfigError
from lab.history import pair_ops
from lab.scenario import FaultStep, LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec
from lab.sim.backend import SimBackend
from nodes.protocols.core import Core
from nodes.protocols.register import Register

pytestmark = pytest.mark.sim


def register_scenario(**kw: Any) -> Scenario:
    wl = dict(kind="kv", clients=3, duration=2.0, timeout=0.3,
              params={"keys": 1, "cas_ratio": 0.0})
    wl.update(kw.pop("workload", {}))
    base: dict[str, Any] = dict(
        name="reg", protocol="register", nodes=[NodeSpec("n1")],
        network=NetworkSpec(LinkParams(delay=0.001)), workload=WorkloadSpec(**wl),
        checks=["linearizable"], settle=0.5)
    base.update(kw)
    return Scenario(**base)


def run(s: Scenario, tmp_path: Path, seed: int = 1, **kw: Any) -> runner.RunResult:
    out = tmp_path / "run"
    for n in range(2, 100):     # a fresh run directory per run
        if not out.exists():
            break
        out = tmp_path / f"run{n}"
    return runner.run_scenario(s, "sim", seed=seed, out=out, quiet=True, **kw)


def test_register_run_writes_the_run_directory(tmp_path: Path) -> None:
    s = register_scenario(faults=[FaultStep(0.5, "crash", "n1", duration=0.4)])
    r = run(s, tmp_path, seed=5)
    assert r.exit_code == 0
    assert [(v.check, v.verdict) for v in r.verdicts] == [("linearizable", HOLDS)]
    d = r.run_dir
    for name in ("scenario.yaml", "trace.jsonl", "history.jsonl", "checks.json", "final.json",
                 "report.md"):
        assert (d / name).is_file(), name
    checks = json.loads((d / "checks.json").read_text())
    assert checks["exit_code"] == 0 and checks["checks"][0]["verdict"] == "holds"
    st = r.stats
    # The crash leaves ops unanswered: they time out as info; the rest succeed.
    assert st["ok"] > 100 and st["info"] >= 1 and st["fail"] == 0
    assert st["latency_p50_ms"] == pytest.approx(2.0)
    faults = [(f["action"], f["phase"], f["ts"]) for f in st["faults"]]
    assert faults == [("crash", "apply", 0.5), ("restart", "revert", 0.9)]
    report = (d / "report.md").read_text()
    assert f"zlab run {d / 'scenario.yaml'} --backend sim --seed 5" in report
    assert "| linearizable | holds | holds |" in report
    resolved = (d / "scenario.yaml").read_text()
    assert "seed: 5" in resolved and "backend: sim" in resolved


def test_info_retires_the_process_and_the_client_goes_on_as_a_fresh_one(tmp_path: Path) -> None:
    s = register_scenario(workload={"clients": 1},
                          faults=[FaultStep(0.5, "pause", "n1", duration=0.5)])
    r = run(s, tmp_path)
    ops = pair_ops(r.history)
    infos = [op for op in ops if op.outcome == "info"]
    assert len(infos) == 1
    end = s.workload.duration          # the workload starts at t=0 on the simulator
    later = [op for op in ops if infos[0].invoke_ts < op.invoke_ts < end]
    assert later and all(op.process != infos[0].process for op in later)
    assert {op.process for op in later} == {infos[0].process + 1}
    # The paused node answered the held request once resumed; the history still says info.
    assert r.exit_code == 0


class LeaderOnly(Core):
    """A register only n2 serves; n1 points at n2, n3 knows no leader."""

    name = "leader_only"

    def start(self) -> None:
        self.value = None

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        if self.ctx.node != "n2":
            hint = "n2" if self.ctx.node == "n1" else None
            self.ctx.reply(client, {"type": "fail", "error": "not_leader", "leader": hint})
        elif op["f"] == "write":
            self.value = op["value"]
            self.ctx.reply(client, {"type": "ok"})
        else:
            self.ctx.reply(client, {"type": "ok", "value": self.value})

    def status(self) -> dict[str, Any]:
        return {"role": "leader" if self.ctx.node == "n2" else "follower", "term": 1}


def with_core(monkeypatch: pytest.MonkeyPatch, core: type[Core]) -> None:
    monkeypatch.setattr(runner, "backend_class", lambda kind: functools.partial(SimBackend, core=core))


def test_not_leader_redirects_to_the_hinted_node_with_the_same_seq(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_core(monkeypatch, LeaderOnly)
    s = register_scenario(nodes=[NodeSpec("n1"), NodeSpec("n2"), NodeSpec("n3")])
    r = run(s, tmp_path)
    assert r.stats["fail"] == 0 and r.stats["info"] == 0 and r.stats["ok"] > 100
    requests = [e for e in r.trace if e["ev"] == "request"]
    by_seq: dict[tuple[str, int], list[str]] = {}
    for e in requests:
        op = e["data"]["op"]
        by_seq.setdefault((op["client"], op["seq"]), []).append(e["node"])
    # Every op ends at n2; a retry carries the same (client, seq); a detour is at most n3 -> n1 -> n2.
    assert all(nodes[-1] == "n2" for nodes in by_seq.values())
    assert any(len(nodes) > 1 for nodes in by_seq.values())
    assert all(len(nodes) <= 3 for nodes in by_seq.values())
    assert r.exit_code == 0


class Slow(Core):
    """Answers every request 100 ms later, or never when the value is a multiple of 7."""

    name = "slow"

    def start(self) -> None:
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.value = None

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        if op["f"] == "write" and op["value"] % 7 == 0:
            return
        self.pending.append((client, op))
        self.ctx.set_timer(f"r{client}", 0.1)

    def handle_timer(self, name: str) -> None:
        client = name[1:]
        for i, (c, op) in enumerate(self.pending):
            if c == client:
                del self.pending[i]
                if op["f"] == "write":
                    self.value = op["value"]
                    self.ctx.reply(c, {"type": "ok"})
                else:
                    self.ctx.reply(c, {"type": "ok", "value": self.value})
                return


def test_open_loop_counts_arrivals_with_no_idle_client_as_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_core(monkeypatch, Slow)
    s = register_scenario(workload={"clients": 2, "rate": 50.0, "duration": 4.0})
    r = run(s, tmp_path)
    st = r.stats
    # 2 clients x ~10 ops/s each can serve at most ~80 of the ~200 arrivals.
    assert 40 <= st["ops"] <= 85
    assert 120 <= st["ops"] + st["skipped"] <= 280
    assert st["info"] >= 1                          # the multiples of 7 never come back
    assert st["latency_p50_ms"] == pytest.approx(102.0)


def test_closed_loop_keeps_one_op_in_flight_per_client(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_core(monkeypatch, Slow)
    s = register_scenario(workload={"clients": 3, "duration": 2.0})
    r = run(s, tmp_path)
    in_flight, peak = 0, 0
    for ev in r.history:
        in_flight += 1 if ev["type"] == "invoke" else -1
        peak = max(peak, in_flight)
    assert peak == 3
    assert 45 <= r.stats["ops"] <= 60               # 3 clients x 2 s / ~0.1 s each
    assert r.stats["skipped"] == 0


def test_an_expected_violation_that_does_not_show_exits_1(tmp_path: Path) -> None:
    s = register_scenario(expect={"linearizable": VIOLATED})
    r = run(s, tmp_path)
    assert r.verdicts[0].verdict == HOLDS and r.exit_code == 1


def test_register_with_many_keys_is_caught_by_linearizable(tmp_path: Path) -> None:
    # The register ignores keys: as a key-value store it is not linearizable.
    s = register_scenario(workload={"params": {"keys": 3, "cas_ratio": 0.0}})
    r = run(s, tmp_path)
    assert r.verdicts[0].verdict == VIOLATED and r.exit_code == 1
    s = register_scenario(workload={"params": {"keys": 3, "cas_ratio": 0.0}},
                          expect={"linearizable": VIOLATED})
    assert run(s, tmp_path).exit_code == 0


def test_exit_codes_of_verdict_sets() -> None:
    def v(name: str, verdict: str) -> Verdict:
        return Verdict(name, verdict)  # type: ignore[arg-type]
    assert exit_code([v("a", HOLDS)], {}) == 0
    assert exit_code([v("a", VIOLATED)], {"a": VIOLATED}) == 0
    assert exit_code([v("a", UNKNOWN), v("b", HOLDS)], {}) == 2
    assert exit_code([v("a", UNKNOWN), v("b", VIOLATED)], {}) == 1
    assert exit_code([v("b", VIOLATED), v("a", UNKNOWN)], {}) == 1


def test_a_crashing_checker_is_unknown_and_an_unknown_name_is_bad_input(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: RunData) -> Verdict:
        raise RuntimeError("no")
    monkeypatch.setattr("lab.checks.registry.all_checks", lambda protocol=None: {"boom": boom})
    data = RunData(scenario={}, trace=[], history=[])
    verdicts, code = run_checks(["boom"], data, {})
    assert verdicts[0].verdict == UNKNOWN and "RuntimeError: no" in verdicts[0].detail and code == 2
    with pytest.raises(ConfigError, match="unknown check nope"):
        run_checks(["nope"], data, {})


def test_default_run_dir_and_latest_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = register_scenario(workload={"duration": 0.2})
    r1 = runner.run_scenario(s, "sim", seed=1, quiet=True)
    r2 = runner.run_scenario(s, "sim", seed=1, quiet=True)
    assert r1.run_dir != r2.run_dir
    assert r1.run_dir.parent == Path("results") and r1.run_dir.name.startswith("reg-")
    latest = Path("results/latest")
    assert latest.is_symlink() and not Path(latest.readlink()).is_absolute()
    assert latest.resolve() == r2.run_dir.resolve()


def test_seed_streams_are_independent_and_a_seed_is_chosen_when_none_is_given(tmp_path: Path) -> None:
    assert runner.derive_seeds(1) == runner.derive_seeds(1)
    assert len(set(runner.derive_seeds(1).values())) == 3
    r = runner.run_scenario(register_scenario(workload={"duration": 0.1}), "sim",
                            out=tmp_path / "x", quiet=True)
    assert isinstance(r.seed, int) and f"seed: {r.seed}" in (r.run_dir / "scenario.yaml").read_text()


# -- workloads ---------------------------------------------------------------------------------

def test_kv_writes_unique_increasing_values_and_follows_its_ratios() -> None:
    import random

    from lab.workloads.kv import KvWorkload
    s = register_scenario(workload={"params": {"keys": 4, "read_ratio": 0.3, "cas_ratio": 0.2,
                                               "delete_ratio": 0.1}})
    wl = KvWorkload(s.workload, s, random.Random(1))
    ops = [wl.next_op(0) for _ in range(4000)]
    written = [op["value"] if op["f"] == "write" else op["value"][1]
               for op in ops if op["f"] in ("write", "cas")]
    assert written == sorted(set(written))          # unique and increasing: lost writes show
    share = {f: sum(op["f"] == f for op in ops) / len(ops) for f in ("read", "cas", "delete", "write")}
    assert share == pytest.approx({"read": 0.3, "cas": 0.2, "delete": 0.1, "write": 0.4}, abs=0.03)
    assert {op["key"] for op in ops} == {"k0", "k1", "k2", "k3"}
    # Jepsen's final reads: every key, at the leader (None), after the heal and the settle
    assert wl.final_ops() == [(None, {"f": "read", "key": f"k{i}", "value": None}) for i in range(4)]


def test_final_reads_of_every_key_are_in_the_history(tmp_path: Path) -> None:
    s = register_scenario(workload={"params": {"keys": 3}})
    r = run(s, tmp_path)
    end = max(e["ts"] for e in r.history if e["ts"] <= s.workload.duration + 0.1)
    final = [op for op in pair_ops(r.history) if op.invoke_ts > end]
    assert [(op.f, op.key, op.outcome) for op in final] == [("read", f"k{i}", "ok") for i in range(3)]
    assert set(r.final["reads"]) == {"k0", "k1", "k2"} and r.final["unanswered"] == []


def test_a_final_read_is_retried_until_ok_and_every_attempt_is_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = register_scenario(workload={"params": {"keys": 1}})
    sim = {}

    class Flaky(Register):
        """Answers every op, but ignores the first two final reads (the node is 'slow')."""

        def handle_request(self, client: str, op: dict[str, Any]) -> None:
            if self.ctx.now() >= s.workload.duration + s.settle and op["f"] == "read":
                sim["n"] = sim.get("n", 0) + 1
                if sim["n"] <= 2:
                    return
            super().handle_request(client, op)

    with_core(monkeypatch, Flaky)
    r = run(s, tmp_path)
    final = [op for op in pair_ops(r.history) if op.invoke_ts >= s.workload.duration + s.settle]
    assert [op.outcome for op in final] == ["info", "info", "ok"]
    assert r.final["reads"] == {"k0": final[-1].value_out}


def test_kv_params_are_checked() -> None:
    import random

    from lab.workloads.kv import KvWorkload
    for params, what in (({"keys": 0}, "at least 1"), ({"read_ratio": 0.9, "cas_ratio": 0.2}, "above 1"),
                         ({"keys": "many"}, "workload.keys"), ({"cas_ratio": -1}, "negative")):
        s = register_scenario(workload={"params": params})
        with pytest.raises(ConfigError, match=what):
            KvWorkload(s.workload, s, random.Random(1))


def test_workload_registry() -> None:
    import random

    from lab.workloads.registry import workload_for
    s = register_scenario()
    assert workload_for(WorkloadSpec(kind="none"), s, random.Random(1)) is None
    assert workload_for(s.workload, s, random.Random(1)).kind == "kv"
    with pytest.raises(ConfigError, match="unknown workload kind 'bogus'"):
        workload_for(WorkloadSpec(kind="bogus"), s, random.Random(1))


def test_transfer_workload_runs_through_the_runner(tmp_path: Path) -> None:
    from lab.topology import load_scenario
    s = load_scenario(str(Path(__file__).parent.parent / "topologies" / "2pc-transfer.yaml"))
    s.workload = WorkloadSpec(**{**s.workload.__dict__, "duration": 1.0})
    r = run(s, tmp_path, seed=2)
    assert r.final, "transfer's final reads reach final.json"
    assert json.loads((r.run_dir / "final.json").read_text()) == r.final
    assert r.exit_code == 0


def test_out_must_be_a_new_directory(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "nodes").mkdir()
    with pytest.raises(ConfigError, match="used: --out: exists and is not empty"):
        runner.run_scenario(register_scenario(), "sim", seed=1, out=used, quiet=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.run_scenario(register_scenario(workload={"duration": 0.1}), "sim", seed=1,
                               out=empty, quiet=True).exit_code == 0


def test_check_names_are_scoped_by_protocol() -> None:
    """Paxos and PBFT each have an `agreement`: a run gets the one of its own protocol."""
    from lab.checks import paxos, pbft
    from lab.checks.registry import all_checks
    assert all_checks("paxos")["agreement"] is paxos.CHECKS["agreement"]
    assert all_checks("multipaxos")["agreement"] is paxos.CHECKS["agreement"]
    assert all_checks("pbft")["agreement"] is pbft.CHECKS["agreement"]
    assert "agreement" not in all_checks("raft") and "election_safety" not in all_checks("pbft")
    # the generic linearizable serves everyone
    assert all_checks("raft")["linearizable"] is all_checks("pbft")["linearizable"]
    # run_checks looks the names up for the run's protocol
    def detail(protocol: str) -> str:
        data = RunData(scenario={"protocol": protocol}, trace=[], history=[])
        return run_checks(["agreement"], data, {})[0][0].detail
    assert "PBFT" in detail("pbft") and "Paxos" in detail("paxos")
