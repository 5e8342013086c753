"""`zlab run`, `zlab check`, `zlab protocols`: exit codes, replay and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parent.parent

RAFT = """\
name: cli-raft
protocol: raft
nodes: 3
config: {{election_timeout: [150ms, 300ms], heartbeat: 50ms}}
network: {{delay: 2ms, jitter: 1ms}}
workload: {{kind: kv, clients: 3, rate: 60/s, duration: 3s, timeout: 500ms, keys: 3}}
faults:
  - {{at: 1s, crash: leader, for: 700ms}}
  - {{at: 2s, partition: [n1, [n2, n3]], oneway: true}}
  - {{at: 2500ms, heal: all}}
checks: {checks}
{extra}
"""


def checks_available() -> str:
    from lab.checks.registry import all_checks
    names = [n for n in ("election_safety", "log_matching", "leader_completeness",
                         "state_machine_safety", "linearizable") if n in all_checks()]
    return "[" + ", ".join(names) + "]"


def scenario_file(tmp_path: Path, extra: str = "", name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(RAFT.format(checks=checks_available(), extra=extra))
    return p


def test_run_then_check_reproduces_the_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", str(scenario_file(tmp_path)), "--backend", "sim", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 3" in printed and f"zlab run {tmp_path / 's.yaml'} --backend sim --seed 3" in printed
    first = json.loads((out / "checks.json").read_text())
    assert all(c["verdict"] == "holds" for c in first["checks"])
    (out / "checks.json").unlink()
    assert main(["check", str(out)]) == 0
    again = json.loads((out / "checks.json").read_text())
    strip = [{k: c[k] for k in ("check", "verdict", "detail")} for c in first["checks"]]
    assert [{k: c[k] for k in ("check", "verdict", "detail")} for c in again["checks"]] == strip
    assert "linearizable: holds" in capsys.readouterr().out


def test_same_seed_gives_a_byte_identical_trace_across_processes(tmp_path: Path) -> None:
    path = scenario_file(tmp_path)
    assert main(["run", str(path), "--backend", "sim", "--seed", "8", "--out", str(tmp_path / "a")]) == 0
    env = {**os.environ, "PYTHONHASHSEED": "12345"}   # string hashing differs from this process
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "run", str(path), "--backend", "sim",
                           "--seed", "8", "--out", str(tmp_path / "b"), "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("trace.jsonl", "history.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    trace = (tmp_path / "a" / "trace.jsonl").read_bytes()
    assert trace.count(b'"ev":"fault"') >= 4 and b'"node":"lab"' in trace
    assert main(["run", str(path), "--backend", "sim", "--seed", "9", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "trace.jsonl").read_bytes() != (tmp_path / "a" / "trace.jsonl").read_bytes()


def test_expected_violation_on_a_correct_run_exits_1(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, extra="expect: {linearizable: violated}")
    assert main(["run", str(path), "--backend", "sim", "--seed", "1", "--out", str(tmp_path / "r")]) == 1
    checks = json.loads((tmp_path / "r" / "checks.json").read_text())
    lin = [c for c in checks["checks"] if c["check"] == "linearizable"][0]
    assert lin["expected"] == "violated" and lin["as_expected"] is False
    assert main(["check", str(tmp_path / "r")]) == 1


def test_bad_yaml_exits_3_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nprotocol: raft\nnodes: 3\nfaults:\n  - {at: 5, crash: leader}\n")
    assert main(["run", str(p)]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zlab: {p}:5:") and "\n" not in err
    p.write_text("name: x\nprotocol: raft\nnodes: [n1, n2\n")
    assert main(["run", str(p)]) == 3
    assert f"{p}:" in capsys.readouterr().err


def test_missing_file_and_bad_usage_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 3
    assert "no such scenario file" in capsys.readouterr().err
    assert main(["run"]) == 3
    assert main(["frobnicate"]) == 3
    assert main(["check"]) == 3
    assert main(["check", str(tmp_path)]) == 3        # not a run directory: no scenario.yaml
    assert main(["--help"]) == 0


def test_check_a_history_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    ev = [
        {"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1, "ts": 0.0},
        {"process": 0, "type": "ok", "f": "write", "key": "x", "value": 1, "ts": 0.1},
        {"process": 1, "type": "invoke", "f": "read", "key": "x", "value": None, "ts": 0.2},
    ]
    good.write_text("".join(json.dumps(e) + "\n" for e in ev + [
        {"process": 1, "type": "ok", "f": "read", "key": "x", "value": 1, "ts": 0.3}]))
    bad.write_text("".join(json.dumps(e) + "\n" for e in ev + [
        {"process": 1, "type": "ok", "f": "read", "key": "x", "value": 2, "ts": 0.3}]))
    assert main(["check", "--history", str(good), "--model", "kv"]) == 0
    assert main(["check", "--history", str(bad), "--model", "kv", "--time-limit", "5"]) == 1
    assert "violated" in capsys.readouterr().out
    assert main(["check", "--history", str(good), "--model", "nope"]) == 3


def test_protocols_lists_tunables_and_bugs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "raft"]) == 0
    out = capsys.readouterr().out
    assert "election_timeout [s-range]" in out and "no_election_restriction:" in out
    assert main(["protocols"]) == 0
    assert "register" in capsys.readouterr().out
    assert main(["protocols", "nope"]) == 3
    assert main(["protocols", "--diagram", "register"]) == 3
    assert "has no state diagram" in capsys.readouterr().err


def test_interrupt_stops_the_backend_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.sim.backend import SimBackend
    stopped = []
    real_stop = SimBackend.stop

    def interrupt(self: SimBackend, t: float) -> None:
        raise KeyboardInterrupt

    def stop(self: SimBackend) -> None:
        stopped.append(True)
        real_stop(self)
    monkeypatch.setattr(SimBackend, "run_until", interrupt)
    monkeypatch.setattr(SimBackend, "stop", stop)
    assert main(["run", str(scenario_file(tmp_path)), "--backend", "sim", "--out", str(tmp_path / "r")]) == 130
    assert stopped == [True]


def test_the_run_directorys_scenario_replays_the_run(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main(["run", str(scenario_file(tmp_path)), "--backend", "sim", "--seed", "5", "--out", str(first)]) == 0
    again = tmp_path / "again"
    # The resolved scenario.yaml carries its seed: no --seed needed to replay it.
    assert main(["run", str(first / "scenario.yaml"), "--out", str(again)]) == 0
    assert (first / "trace.jsonl").read_bytes() == (again / "trace.jsonl").read_bytes()


def test_check_of_a_damaged_run_directory_names_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", str(scenario_file(tmp_path)), "--backend", "sim", "--seed", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    lines = (out / "trace.jsonl").read_text().splitlines()
    lines[2] = "{not json"
    (out / "trace.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["check", str(out)]) == 3
    assert f"zlab: {out / 'trace.jsonl'}:3: not JSON" in capsys.readouterr().err
    (out / "trace.jsonl").unlink()
    assert main(["check", str(out)]) == 3


@pytest.mark.local
def test_run_defaults_to_local_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DESIGN.md: `local` is the default runtime; the run directory records the one used."""
    import yaml
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    p = tmp_path / "one.yaml"
    p.write_text("name: one\nprotocol: register\nnodes: 2\nworkload: {kind: none}\n")
    assert main(["run", str(p), "--out", str(tmp_path / "r")]) == 0
    assert yaml.safe_load((tmp_path / "r" / "scenario.yaml").read_text())["backend"] == "local"
    # each agent's own log: the nodes were processes, not simulated objects
    assert sorted(x.name for x in (tmp_path / "r" / "nodes").glob("*.log")) == ["n1.log", "n2.log"]
