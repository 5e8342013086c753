"""The shipped Paxos scenarios (topologies/paxos-*.yaml, multipaxos-*.yaml) give their expected
verdicts: every one on the simulator, the duel's livelock and the partition on local processes,
and the Multi-Paxos leader crash on Docker containers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.backends.local import LocalBackend
from lab.checks.base import HOLDS
from lab.runner import RunResult, run_scenario
from lab.scenario import LinkParams, NetworkSpec
from lab.topology import load_scenario

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = sorted(p.name for p in (ROOT / "topologies").glob("*paxos-*.yaml"))


def run(name: str, backend: str, tmp_path: Path) -> RunResult:
    s = load_scenario(str(ROOT / "topologies" / name))
    r = run_scenario(s, backend, out=tmp_path / "run", quiet=True, write=backend != "sim")
    got = {v.check: v.verdict for v in r.verdicts}
    assert r.exit_code == 0, (got, [v.detail for v in r.verdicts])
    assert got == {c: s.expect.get(c, HOLDS) for c in s.checks}
    return r


def test_the_shipped_scenarios_are_the_ones_the_docs_promise() -> None:
    assert TOPOLOGIES == ["multipaxos-5.yaml", "multipaxos-leader-crash.yaml", "multipaxos-partition.yaml",
                          "multipaxos-repartition.yaml", "paxos-backoff.yaml", "paxos-duel.yaml"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in TOPOLOGIES:
        assert f"`{name}`" in readme, name


@pytest.mark.sim
@pytest.mark.parametrize("name", TOPOLOGIES)
def test_topology_gives_its_expected_verdicts_on_the_simulator(name: str, tmp_path: Path) -> None:
    r = run(name, "sim", tmp_path)
    if name.startswith("multipaxos"):       # and not vacuously: the clients got their answers
        assert r.stats["ok"] > 300 and r.stats["commits"] > 300
    if name == "multipaxos-leader-crash.yaml":
        leader_crash_claims(r)
    if name == "multipaxos-partition.yaml":
        partition_claims(r)


def leader_crash_claims(r: RunResult) -> None:
    """A new leader within a second of the crash; the restarted one catches up."""
    crashes = [e for e in r.trace if e["ev"] == "fault" and e["data"].get("action") == "crash"
               and e["data"].get("phase") == "apply"]
    assert len(crashes) == 2
    victim = crashes[0]["data"]["target"]
    victim = victim[0] if isinstance(victim, list) else victim
    takeovers = [e for e in r.trace if e["ev"] == "state" and e["data"].get("role") == "leader"
                 and crashes[0]["ts"] < e["ts"] < crashes[0]["ts"] + 1.0]
    assert takeovers and takeovers[0]["node"] != victim
    # the restarted leader executes what was chosen while it was down
    last = max(e["data"]["slot"] for e in r.trace if e["ev"] == "commit")
    assert any(e["ev"] == "commit" and e["node"] == victim and e["data"]["slot"] >= last - 5
               for e in r.trace)


def partition_claims(r: RunResult) -> None:
    """The old leader, cut off with a minority, learns nothing until the heal."""
    cut = next(e for e in r.trace if e["ev"] == "fault" and e["data"].get("action") == "partition")
    heal = next(e for e in r.trace if e["ev"] == "fault" and e["data"].get("action") == "heal")
    old = next(e["node"] for e in reversed(r.trace) if e["ts"] < cut["ts"] and e["ev"] == "state"
               and e["data"].get("role") == "leader")
    learned = [e for e in r.trace if e["ev"] == "commit" and e["node"] == old
               and cut["ts"] + 0.05 < e["ts"] < heal["ts"]]
    assert not learned, learned[:3]


@pytest.mark.local
def test_multipaxos_partition_on_local_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    partition_claims(run("multipaxos-partition.yaml", "local", tmp_path))


def duel_on_local(backoff: str, tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """paxos-duel's nodes as local processes, with 50 ms links; once all are up, n1 and n2 are
    asked to propose at the same instant; 3 s later, every node's status and the answers."""
    s = load_scenario(str(ROOT / "topologies" / "paxos-duel.yaml"))
    # A phase needs one round trip (100 ms here): the retry timeout must leave room for it.
    s.config.update(backoff=backoff, own_value=False, start_at="0s", retry_timeout="300ms")
    s.network = NetworkSpec(LinkParams(delay=0.05, jitter=0.001))
    b = LocalBackend(s, 1, str(tmp_path / backoff))
    answers: list[dict[str, Any]] = []
    try:
        b.start()
        for n in ("n1", "n2"):
            b.submit(n, {"f": "propose", "value": n, "client": n, "seq": 1}, answers.append)
        b.run_until(b.now() + 3.0)
        return {n: b.status(n) for n in s.node_names}, answers
    finally:
        b.stop()


@pytest.mark.local
def test_the_duel_on_local_processes_pre_empts_until_backoff_ends_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The livelock is not a simulator artefact: real processes duel just the same. paxos-duel
    pins the simulator because one process stalled for two hops ends a duel on a busy machine,
    so here the claim is the ballot count, with slower links: without backoff the two
    proposers pre-empt each other through dozens of ballots (on a quiet machine, for the
    whole run: nothing decided); with backoff the same duel is decided within a few."""
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    duel, _ = duel_on_local("none", tmp_path)
    assert min(duel[n]["term"] for n in ("n1", "n2")) >= 20, duel
    calm, answers = duel_on_local("exponential", tmp_path)
    assert {calm[n]["learned"] for n in calm} in ({"n1"}, {"n2"}), calm
    assert max(calm[n]["term"] for n in ("n1", "n2")) <= 12, calm
    assert [a.get("value") for a in answers] == [calm["n3"]["learned"]] * 2


@pytest.mark.docker
def test_multipaxos_leader_crash_on_docker(zlab_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    r = run("multipaxos-leader-crash.yaml", "docker", tmp_path)
    kills = [e for e in r.trace if e["ev"] == "fault" and e["data"].get("action") == "crash"
             and e["data"].get("phase") == "apply"]
    assert kills and all(e["data"]["mechanism"] in ("signal", "docker") for e in kills), kills
    assert any(e["ev"] == "log" and e["data"].get("msg") == "recovered" for e in r.trace)


@pytest.mark.sim
def test_the_same_seed_gives_the_same_trace_in_another_process() -> None:
    """Nothing in either core iterates a set of strings into the trace: two processes with
    different hash seeds write byte-identical traces for the duel and a repartitioned store."""
    script = (
        "import hashlib, json, sys\n"
        "from lab.runner import run_scenario\n"
        "from lab.topology import load_scenario\n"
        "for name in sys.argv[1:]:\n"
        "    r = run_scenario(load_scenario(name), 'sim', seed=5, quiet=True, write=False)\n"
        "    print(hashlib.sha256(json.dumps(r.trace, sort_keys=True).encode()).hexdigest())\n")
    files = [str(ROOT / "topologies" / n) for n in ("paxos-backoff.yaml", "multipaxos-repartition.yaml")]
    outs = []
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        p = subprocess.run([sys.executable, "-c", script, *files], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert outs[0] == outs[1] and len(outs[0].split()) == 2
