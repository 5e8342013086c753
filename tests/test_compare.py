"""``zlab compare`` on the simulator, cut down: two rows, two faults, a short timeline.

The table has its structure (table.json rows, table.md, report.md, the plot, one run
directory per cell, a replay command that names a scenario file that exists), the
measured columns come from the runs, the correct 2PC blocks under a coordinator crash
(nonblocking violated) while atomicity holds, and the same 2PC with its named bug
``decision_not_logged`` turns the consistency cell to atomicity violated. Also: every
registered row has its scenario file, and the suite's fault steps load as YAML faults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.compare import cell_scenario, run_compare
from lab.compare.rows import Row, select
from lab.compare.suite import SUITE, Timeline, measure, no_majority
from lab.errors import ConfigError
from lab.topology import load_scenario, load_scenario_text

pytestmark = pytest.mark.sim

SHORT = Timeline(at=0.5, window=2.5, duration=3.5)


def buggy_twopc(tmp_path: Path) -> Row:
    doc = yaml.safe_load(Path("topologies/compare/twopc.yaml").read_text(encoding="utf-8"))
    doc["name"] = "compare-twopc-bug"
    doc["config"] = {**doc["config"], "bugs": ["decision_not_logged"]}
    path = tmp_path / "twopc-bug.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return Row("twopc-bug", "twopc", "coordinator", "2PC", shape=path, sources=("twopc.py",))


def test_compare_table_and_a_broken_protocol(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    table = run_compare(names=["twopc"], extra=(buggy_twopc(tmp_path),), faults=["none", "crash"],
                        seed=2, out=out, quiet=True, timeline=SHORT)
    on_disk = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(table))
    assert [r["row"] for r in on_disk["rows"]] == ["twopc", "twopc-bug"]
    assert [f["fault"] for f in on_disk["suite"]] == ["none", "crash"]
    good, bad = on_disk["rows"]
    for row in (good, bad):
        assert row["protocol"] == "twopc"
        assert row["tutorial"]["availability"] == "poor"
        assert row["throughput"] > 0 and row["latency_ms"]["p50"] > 0 and row["msgs_per_op"] > 0
        assert row["complexity_lines"] > 100
        for fault, cell in row["faults"].items():
            run = out / cell["run_dir"]
            assert (run / "history.jsonl").is_file() and (run / "checks.json").is_file()
            assert not (run / "plots.png").exists()      # no views unless asked for
            assert "views not made" in (run / "report.md").read_text(encoding="utf-8")
            assert set(cell["verdicts"]) == {"atomicity", "conservation", "no_commit_after_abort",
                                             "nonblocking"}
            scenario_file = cell["replay"].split()[2]
            assert load_scenario(scenario_file).seed == 2, fault
    # the coordinator crashed: the correct 2PC blocks (and answers nothing) but stays atomic
    assert good["consistency"]["violated"] == {"nonblocking": ["crash"]}
    assert good["faults"]["crash"]["availability"]["during"] < 0.2
    assert good["availability"]["after"] > 0.5
    # ... the one that does not log its decision loses atomicity
    assert "crash" in bad["consistency"]["violated"]["atomicity"]
    assert not bad["consistency"]["holds_everywhere"]
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "**atomicity** violated (crash)" in md and "| twopc-bug |" in md
    assert "## The columns" in (out / "report.md").read_text(encoding="utf-8")
    assert (out / "compare.png").stat().st_size > 1000


def test_every_row_has_its_shape_and_every_fault_loads() -> None:
    rows = select()
    assert {r.protocol for r in rows} >= {"paxos", "multipaxos", "raft", "pbft", "twopc",
                                          "threepc", "gossip"}
    for row in rows:
        for fault in SUITE:
            doc = cell_scenario(row, fault, 5, SHORT)
            s = load_scenario_text(yaml.safe_dump(doc), path=f"{row.name}-{fault.name}")
            assert s.protocol == row.protocol and s.seed == 5
            assert s.workload.duration == SHORT.duration
            assert len(s.faults) == (0 if fault.name == "none" else 1)
            if s.faults:
                assert s.faults[0].at == SHORT.at and s.faults[0].duration == SHORT.window
    assert [r.name for r in select(["pbft"])] == ["pbft", "pbft-byzantine"]
    with pytest.raises(ConfigError, match="unknown protocol or row 'nope'"):
        select(["nope"])


def test_no_majority_leaves_every_group_short_of_a_majority() -> None:
    for n in range(3, 10):
        nodes = [f"n{i}" for i in range(n)]
        groups = no_majority(nodes)
        assert sorted(x for g in groups for x in g) == sorted(nodes)
        assert all(2 * len(g) <= n for g in groups)


def op(p: int, t0: float, t1: float, kind: str = "ok", error: str | None = None
       ) -> list[dict[str, object]]:
    """One client read, invoked at t0 and ended (``kind``, ``error``) at t1."""
    end = {"process": p, "type": kind, "f": "read", "key": "x", "value": None, "ts": t1}
    if error:
        end["error"] = error
    return [{"process": p, "type": "invoke", "f": "read", "key": "x", "value": None, "ts": t0}, end]


def test_measure_counts_what_was_served_while_the_fault_lasted_and_after() -> None:
    trace = [{"ts": 1.5, "node": "lab", "ev": "fault", "data": {"phase": "apply"}},
             {"ts": 4.0, "node": "lab", "ev": "fault", "data": {"phase": "revert"}}]
    # SHORT: the fault at 1.5 s means the workload began at 1.0 s; heal at 4.0, end at 4.5
    history = (op(1, 0.6, 0.7)                         # ended before the fault: left out
               + op(2, 1.6, 1.7)                       # served
               + op(3, 1.8, 4.2)                       # waited the fault out: in neither window
               + op(4, 2.0, 3.0, "info")               # timed out: not served
               + op(7, 2.2, 2.3, "fail", "cas_mismatch")    # refused on its merits: served
               + op(8, 2.4, 2.5, "fail", "unavailable")     # not served
               + op(9, 4.05, 4.2, "info") + op(5, 4.1, 4.3)  # after the heal: one of two
               + op(6, 9.0, 9.1))                      # a final read, after the workload
    got = measure(history, trace, SHORT)
    assert got["during"] == 0.5 and got["ops_during"] == 4
    assert got["after"] == 0.5 and got["ops_after"] == 2
    assert got["recovery_s"] == pytest.approx(0.3)     # heal at 4.0, op 5 served at 4.3


def test_measure_takes_the_heal_from_the_revert_event() -> None:
    # a backend that restarted late: applied at 1.5 (t0 1.0), reverted at 4.3, not 4.0
    trace = [{"ts": 1.5, "node": "lab", "ev": "fault", "data": {"phase": "apply"}},
             {"ts": 4.3, "node": "lab", "ev": "fault", "data": {"phase": "revert"}}]
    history = op(1, 3.0, 4.1, "info") + op(2, 4.35, 4.4)
    got = measure(history, trace, SHORT)
    assert (got["during"], got["after"]) == (0.0, 1.0)
    assert got["recovery_s"] == pytest.approx(0.1)


def test_measure_without_a_fault_uses_the_same_windows_as_a_baseline() -> None:
    # the first op marks the workload's start (0.2): window [0.7, 3.2), after [3.2, 3.7)
    history = op(1, 0.2, 0.3, "fail") + op(2, 1.0, 1.1) + op(3, 3.3, 3.4, "info")
    got = measure(history, [], SHORT)
    assert (got["during"], got["after"], got["recovery_s"]) == (1.0, 0.0, None)


@pytest.mark.parametrize("args, said", [
    (["--protocols", "raft,nope"], "--protocols: unknown protocol or row 'nope'"),
    (["--faults", "crash,quake"], "--faults: unknown fault 'quake'"),
])
def test_cli_bad_input_is_one_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              args: list[str], said: str) -> None:
    from lab.cli import main
    assert main(["compare", *args, "--out", str(tmp_path / "c")]) == 3
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()        # nothing written before the input is checked


def test_a_run_the_runtime_cannot_make_is_noted_and_the_table_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import lab.runner
    from lab.cli import main
    from lab.errors import BackendError
    real = lab.runner.run_scenario

    def flaky(scenario: Any, **kwargs: Any) -> Any:
        if scenario.name.endswith("-crash"):
            raise BackendError("lab x: n1 did not answer within 20s")
        return real(scenario, **kwargs)
    monkeypatch.setattr(lab.runner, "run_scenario", flaky)
    out = tmp_path / "c"
    assert main(["compare", "--protocols", "gossip", "--faults", "none,crash", "--out", str(out)]) == 3
    assert "1 runs could not be made: gossip/crash" in capsys.readouterr().err
    row = json.loads((out / "table.json").read_text(encoding="utf-8"))["rows"][0]
    assert row["faults"]["crash"]["error"] == "lab x: n1 did not answer within 20s"
    assert row["consistency"]["unknown"] == {"run failed": ["crash"]}
    assert row["faults"]["none"]["verdicts"]["convergence"] == "holds"   # the other run stands
    assert "run failed" in (out / "table.md").read_text(encoding="utf-8")
