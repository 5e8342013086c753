"""The shipped PBFT scenarios (topologies/pbft-*.yaml) give their expected verdicts on the
simulator and on local processes; `byzantine:` in YAML is checked where it is written; the same
seed replays a Byzantine run byte for byte in another process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main
from lab.errors import ConfigError
from lab.runner import run_scenario
from lab.topology import load_scenario, load_scenario_text

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "topologies").glob("pbft-*.yaml"))


def test_there_are_the_scenarios_the_issue_asks_for() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"pbft-4", "pbft-byzantine-primary", "pbft-f-plus-1", "pbft-7-byzantine"} <= names
    f_plus_1 = load_scenario(str(ROOT / "topologies" / "pbft-f-plus-1.yaml"))
    assert f_plus_1.expect == {"agreement": "violated"}
    assert sum(bool(n.attrs.get("byzantine")) for n in f_plus_1.nodes) == 2 == (4 - 1) // 3 + 1


def _expected(path: Path, backend: str, tmp_path: Path) -> None:
    s = load_scenario(str(path))
    r = run_scenario(s, backend, quiet=True, write=backend != "sim", out=str(tmp_path / "run"))
    got = {v.check: v.verdict for v in r.verdicts}
    want = {c: s.expect.get(c, "holds") for c in got}
    assert r.exit_code == 0 and got == want, [v.as_dict() for v in r.verdicts]
    if "violated" in want.values():
        # The break really happened: honest replicas committed different batches at one seq.
        bad = next(v for v in r.verdicts if v.check == "agreement")
        assert bad.data["violations"][0]["digest_a"] != bad.data["violations"][0]["digest_b"]
    else:
        assert r.stats["ok"] >= 10      # real work was done (a machine under heavy load does little)


@pytest.mark.sim
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_on_the_simulator(path: Path, tmp_path: Path) -> None:
    _expected(path, "sim", tmp_path)


@pytest.mark.local
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_on_local_processes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    _expected(path, "local", tmp_path)


@pytest.mark.sim
def test_a_byzantine_run_replays_byte_for_byte_in_another_process(tmp_path: Path) -> None:
    child = ("import sys; from lab.topology import load_scenario; from lab.runner import run_scenario; "
             "from lab.tracefile import write_trace; "
             "r = run_scenario(load_scenario(sys.argv[1]), 'sim', seed=99, quiet=True, write=False); "
             "write_trace(r.trace, sys.argv[2])")
    outs = []
    for hashseed in ("1", "2"):
        out = tmp_path / f"trace{hashseed}.jsonl"
        subprocess.run([sys.executable, "-c", child, str(ROOT / "topologies" / "pbft-byzantine-primary.yaml"),
                        str(out)], check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hashseed})
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and b'"byzantine":["equivocate","wrong_reply"]' in outs[0]


# -- the byzantine key in YAML -------------------------------------------------------------------
YAML = """name: x
protocol: {protocol}
nodes:
  - n1
  - {{name: n2, byzantine: {value}}}
  - n3
  - n4
"""


@pytest.mark.parametrize("protocol, value, message", [
    ("pbft", "[lie]", "x.yaml:5: nodes[1].byzantine[0]: pbft has no behaviour 'lie'"),
    ("pbft", "[silnet]", "did you mean silent?"),
    ("pbft", "{a: 1}", "x.yaml:5: nodes[1].byzantine: expected a behaviour name"),
    ("raft", "[silent]", "x.yaml:5: nodes[1].byzantine: raft has no Byzantine behaviours"),
])
def test_byzantine_behaviours_are_checked_with_file_and_line(protocol: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_scenario_text(YAML.format(protocol=protocol, value=value), path="x.yaml")
    assert message in str(e.value)


def test_byzantine_behaviours_reach_the_node_spec() -> None:
    s = load_scenario_text(YAML.format(protocol="pbft", value="silent"), path="x.yaml")
    assert s.node("n2").attrs == {"byzantine": ["silent"]}
    assert s.node("n2").as_dict()["byzantine"] == ["silent"]


def test_zlab_protocols_lists_the_behaviours(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "pbft"]) == 0
    out = capsys.readouterr().out
    for name in ("silent", "equivocate", "forge", "wrong_digest", "replay", "lie_in_view_change"):
        assert f"    {name}: " in out
    assert "prepared_with_f_plus_1" in out and "checkpoint_interval [count] = 32" in out


@pytest.mark.local
def test_zlab_client_follows_the_client_rule_in_an_interactive_lab(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lab import labstate
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    name = f"pbft-cli-{os.getpid()}"
    assert main(["up", str(ROOT / "topologies" / "pbft-4.yaml"), "--name", name]) == 0
    try:
        assert main(["client", name, "put", "x", "5"]) == 0
        assert main(["fault", name, "crash", "n1"]) == 0          # the primary: a view change
        assert main(["client", name, "put", "x", "6"]) == 0
        capsys.readouterr()
        assert main(["client", name, "get", "x"]) == 0
        assert "x = 6" in capsys.readouterr().out
    finally:
        main(["down", name])
    assert name not in labstate.names()
