"""Histories from other tools: string processes, a fail's error, and Jepsen's own history.edn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.checks.base import HOLDS, VIOLATED
from lab.checks.linearizable import check_history_file
from lab.cli import main
from lab.errors import CheckError
from lab.history import History, load_history
from lab.jepsen_edn import load_edn_history

# A register test as Jepsen writes it: one op a line, times in nanoseconds, a nemesis
# between, a cas that fails with an error, a read that times out (info).
REGISTER = """\
{:type :invoke, :f :write, :value 3, :time 1000000, :process 0, :index 0}
{:type :invoke, :f :read, :value nil, :time 2000000, :process 1, :index 1}
{:type :ok, :f :write, :value 3, :time 3000000, :process 0, :index 2}
{:type :info, :f :start, :value nil, :time 3500000, :process :nemesis, :index 3}
{:type :ok, :f :read, :value 3, :time 4000000, :process 1, :index 4}
{:type :info, :f :start, :value [:isolated {"n1" #{"n2"}}], :time 4500000, :process :nemesis, :index 5}
{:type :invoke, :f :cas, :value [4 5], :time 5000000, :process 0, :index 6}
{:type :fail, :f :cas, :value [4 5], :time 6000000, :process 0, :index 7, :error :cas-mismatch}
{:type :invoke, :f :read, :value nil, :time 7000000, :process 1, :index 8}
{:type :info, :f :read, :value nil, :time 9000000, :process 1, :index 9, :error :timeout}
"""

# An independent (multi-key) test, the whole history one vector of tagged records.
INDEPENDENT = """[
#jepsen.history.Op{:index 0, :time 100, :type :invoke, :process 0, :f :write, :value [1 7]}
#jepsen.history.Op{:index 1, :time 200, :type :invoke, :process 1, :f :write, :value [2 8]}
#jepsen.history.Op{:index 2, :time 300, :type :ok, :process 0, :f :write, :value [1 7]}
#jepsen.history.Op{:index 3, :time 400, :type :ok, :process 1, :f :write, :value [2 8]}
#jepsen.history.Op{:index 4, :time 500, :type :invoke, :process 0, :f :cas, :value [1 [7 9]]}
#jepsen.history.Op{:index 5, :time 600, :type :ok, :process 0, :f :cas, :value [1 [7 9]]}
#jepsen.history.Op{:index 6, :time 700, :type :invoke, :process 1, :f :read, :value [2 nil]}
#jepsen.history.Op{:index 7, :time 800, :type :ok, :process 1, :f :read, :value [2 8]}
#jepsen.history.Op{:index 8, :time 900, :type :invoke, :process 0, :f :read, :value [1 nil]}
#jepsen.history.Op{:index 9, :time 990, :type :ok, :process 0, :f :read, :value [1 9]}
]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_register_history_maps_onto_zlab_events(tmp_path: Path) -> None:
    events = load_edn_history(write(tmp_path, "history.edn", REGISTER))
    assert all(e["process"] in (0, 1) for e in events)              # the nemesis is left out
    assert events[0] == {"process": 0, "type": "invoke", "f": "write", "key": None, "value": 3,
                         "ts": 0.001}
    fail = next(e for e in events if e["type"] == "fail")
    assert fail["value"] == [4, 5] and fail["error"] == "cas-mismatch"
    assert check_history_file(tmp_path / "history.edn", fmt="edn").verdict == HOLDS


def test_independent_keys_come_from_the_value_tuples(tmp_path: Path) -> None:
    events = load_edn_history(write(tmp_path, "history.edn", INDEPENDENT))
    assert [(e["key"], e["value"]) for e in events[4:6]] == [(1, [7, 9]), (1, [7, 9])]
    assert events[-1] == {"process": 0, "type": "ok", "f": "read", "key": 1, "value": 9, "ts": 9.9e-07}
    assert check_history_file(tmp_path / "history.edn", fmt="edn").verdict == HOLDS


def test_a_broken_edn_history_is_violated(tmp_path: Path) -> None:
    # Key 1 was cas'd to 9 and acknowledged; a later read sees 7 again.
    broken = INDEPENDENT.replace(":value [1 9]}", ":value [1 7]}")
    v = check_history_file(write(tmp_path, "history.edn", broken), fmt="edn")
    assert v.verdict == VIOLATED and v.data["key"] == 1


def test_the_cli_reads_edn_and_judges_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "history.edn", REGISTER)
    bad = write(tmp_path, "bad.txt", REGISTER.replace(":ok, :f :read, :value 3,", ":ok, :f :read, :value 4,"))
    assert main(["check", "--history", str(good)]) == 0                  # .edn: read as EDN
    assert main(["check", "--history", str(bad), "--format", "edn"]) == 1
    assert "violated" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("{:type :invoke, :f :read", "not an EDN history"),
    ("{:type :invoke, :f :read, :value nil, :time 1, :process 0} 7", "op 1: expected a map"),
    ("{:type :invoke, :f :read, :value nil, :process 0, :index 4}", "op 4: missing field 'ts'"),
    ("{:type :ok, :f :read, :value nil, :time 5, :process 0, :index 0}", "op 0: ok for process 0"),
    ("#foo/bar {:a 1}", "not an EDN history"),
])
def test_bad_edn_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                   message: str) -> None:
    path = write(tmp_path, "history.edn", text)
    with pytest.raises(CheckError, match=message):
        load_edn_history(path)
    assert main(["check", "--history", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"zlab: {path}") and err.count("\n") == 1


def test_string_processes_are_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = [
        {"process": "c1", "type": "invoke", "f": "write", "key": "x", "value": 1, "ts": 0.0},
        {"process": 2, "type": "invoke", "f": "read", "key": "x", "value": None, "ts": 0.05},
        {"process": "c1", "type": "ok", "f": "write", "key": "x", "value": 1, "ts": 0.1},
        {"process": "nemesis", "type": "info", "f": "kill", "value": "n1", "ts": 0.15},
        {"process": 2, "type": "ok", "f": "read", "key": "x", "value": 1, "ts": 0.2},
        {"process": "c1", "type": "invoke", "f": "read", "key": "x", "value": None, "ts": 0.3},
        {"process": "c1", "type": "ok", "f": "read", "key": "x", "value": 1, "ts": 0.4},
    ]
    good = tmp_path / "h.jsonl"
    good.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["check", "--history", str(good)]) == 0
    events[-1] = {**events[-1], "value": 5}
    good.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["check", "--history", str(good)]) == 1
    assert "c1 read 'x' -> 5" in capsys.readouterr().out


def test_a_fails_error_is_recorded_and_read_back(tmp_path: Path) -> None:
    h = History()
    h.invoke(0, "cas", "x", [1, 2], 0.0)
    h.complete(0, "fail", [1, 2], 0.1, error="cas_mismatch")
    h.invoke(0, "write", "x", 3, 0.2)
    h.complete(0, "ok", 3, 0.3, error="ignored on ok")
    path = tmp_path / "history.jsonl"
    h.write(path)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[1]["error"] == "cas_mismatch" and "error" not in lines[0] and "error" not in lines[3]
    assert load_history(path) == h.events


@pytest.mark.sim
def test_the_runner_records_a_fails_error() -> None:
    from lab.runner import run_scenario
    from lab.scenario import NodeSpec, Scenario, WorkloadSpec
    s = Scenario(name="cas-errors", protocol="raft", nodes=[NodeSpec(f"n{i}") for i in (1, 2, 3)],
                 workload=WorkloadSpec(kind="kv", clients=2, rate=200.0, duration=0.5, timeout=0.5,
                                       params={"keys": 1, "cas_ratio": 0.6, "read_ratio": 0.1}),
                 checks=["linearizable"])
    r = run_scenario(s, "sim", seed=3, quiet=True, write=False)
    fails = [e for e in r.history if e["type"] == "fail"]
    assert fails and all(e["f"] == "cas" and e["error"] == "cas_mismatch" for e in fails)
    assert not any("error" in e for e in r.history if e["type"] != "fail")
