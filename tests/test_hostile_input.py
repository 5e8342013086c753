"""Hostile input: every bad file or command line ends in one line on stderr and exit 3.

DESIGN.md's exit codes: 1 means "a verdict differs", which CI reads as a safety
violation, so a crash must never leave with Python's traceback and exit 1. Each
case below is something a user (or a fuzzer) did, run through the CLI in process;
each must be refused on purpose: one line that says what (and where), exit 3,
never zlab's last-resort "internal error" line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.cli import main
from lab.errors import LabError
from lab.topology import load_scenario_text

ROOT = Path(__file__).resolve().parent.parent

BASE = "name: h\nprotocol: raft\nnodes: 3\n"
TWOPC = "name: h\nprotocol: twopc\nnodes:\n"


def bomb(levels: int = 9) -> str:
    """A billion-laughs YAML fragment: anchors ``l0`` .. ``l<levels>``, each nine of the last."""
    out = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels + 1):
        out += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
    return out


def under(key: str, text: str) -> str:
    """``text`` indented under ``key:``."""
    return f"{key}:\n" + textwrap.indent(text, "  ")


# (id, scenario text or bytes, words the one line must hold)
SCENARIOS: list[tuple[str, str | bytes, str]] = [
    ("seed-nested-5000", BASE + "seed: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),
    ("seed-nested-100", BASE + "seed: " + "[" * 100 + "]" * 100 + "\n", "nested too deeply"),
    ("mapping-nested-100", BASE + "config: " + "{a: " * 100 + "1" + "}" * 100 + "\n", "nested too deeply"),
    ("bomb-under-description", BASE + under("defs", bomb()) + "description: *l9\n", "YAML bomb"),
    ("bomb-as-description", "name: h\nprotocol: raft\nnodes: 3\n"
     + bomb().replace("l0: &l0", "description: &l0", 1).replace("\nl", "\nx_l"), "YAML bomb"),
    ("bomb-node-attribute", "name: h\nprotocol: raft\n" + under("defs", bomb())
     + "nodes:\n  - {name: n1, colour: *l9}\n", "YAML bomb"),
    ("bomb-workload-key", BASE + under("defs", bomb())
     + "workload: {kind: kv, duration: 2s, keys: *l9}\n", "YAML bomb"),
    ("alias-contains-itself", BASE + "description: &a [*a]\n", "contains itself"),
    ("twopc-only-coordinator", TWOPC + "  - {name: coord, role: coordinator}\n", "at least one participant"),
    ("twopc-one-node", "name: h\nprotocol: twopc\nnodes: 1\n", "at least one participant"),
    ("twopc-two-coordinators", TWOPC + "  - {name: a, role: coordinator}\n  - {name: b, role: coordinator}\n"
     "  - {name: c, role: participant}\n", "exactly one node with role coordinator"),
    ("twopc-no-coordinator", TWOPC + "  - {name: a, role: participant}\n  - {name: b, role: participant}\n",
     "exactly one node with role coordinator"),
    ("threepc-unknown-role", "name: h\nprotocol: threepc\nnodes:\n  - {name: a, role: coordinator}\n"
     "  - {name: b, role: leader}\n", "no role 'leader'"),
    ("twopc-both-roles", TWOPC + "  - {name: a, role: [coordinator, participant]}\n  - b\n", "not both"),
    ("paxos-unknown-role", "name: h\nprotocol: paxos\nnodes:\n  - {name: a, role: coordinator}\n",
     "no role 'coordinator'"),
    ("check-of-2pc-on-raft", BASE + "checks: [atomicity]\n", "does not apply to raft"),
    ("check-of-raft-on-2pc", "name: h\nprotocol: twopc\nnodes: 3\nchecks: [election_safety]\n",
     "does not apply to twopc"),
    ("expect-of-raft-on-2pc", "name: h\nprotocol: twopc\nnodes: 3\nexpect: {log_matching: violated}\n",
     "does not apply to twopc"),
    ("workload-typo-read-ratio", BASE + "workload: {kind: kv, duration: 2s, read_ratoi: 0.5}\n",
     "did you mean read_ratio?"),
    ("workload-typo-duration", BASE + "workload: {kind: kv, durration: 2s}\n", "did you mean duration?"),
    ("workload-bad-value", BASE + "workload: {kind: kv, duration: 2s, keys: many}\n", "workload.keys"),
    ("workload-ratios-above-1", BASE + "workload: {kind: kv, duration: 2s, read_ratio: 0.9, cas_ratio: 0.5}\n",
     "above 1"),
    ("fault-at-workload-end", BASE + "workload: {kind: kv, duration: 2s}\nfaults:\n  - {at: 2s, crash: n1}\n",
     "at or after the end of the workload"),
    ("fault-after-workload-end", BASE + "workload: {kind: kv, duration: 2s}\nfaults:\n  - {at: 1s, crash: n1}\n"
     "  - {at: 1h, restart: n1}\n", "at or after the end of the workload"),
    ("seed-5000-digits", BASE + "seed: " + "7" * 5000 + "\n", "cannot read this value"),
    ("seed-negative", BASE + "seed: -1\n", "seed"),
    ("seed-a-date", BASE + "seed: 2024-13-45\n", "seed"),
    ("key-is-a-list", BASE + "? [a, b]\n: 1\n", "keys must be names"),
    ("merge-of-a-number", BASE + "config: {<<: 5}\n", "merge"),
    ("python-tag", BASE + "description: !!python/object:os.system [ls]\n", "cannot read this value"),
    ("name-of-a-megabyte", "name: " + "x" * 1_000_000 + "!\nprotocol: raft\nnodes: 3\n", "expected a scenario name"),
    ("two-documents", BASE + "---\n" + BASE, "not valid YAML"),
    ("tab-indent", "name: h\nnodes:\n\t- n1\n", "not valid YAML"),
    ("nul-byte", BASE + "description: a\x00b\n", "not valid YAML"),
    ("not-utf8", BASE.encode() + b"description: caf\xe9\n", "not a UTF-8 text file"),
    ("random-bytes", bytes(range(256)) * 8, "not a UTF-8 text file"),
    ("empty", "", "empty"),
    ("a-list", "- a\n- b\n", "expected a mapping"),
    ("a-number", "42\n", "expected a mapping"),
    ("nodes-0", "name: h\nprotocol: raft\nnodes: 0\n", "nodes"),
    ("nodes-1001", "name: h\nprotocol: raft\nnodes: 1001\n", "nodes"),
    ("nodes-twice", "name: h\nprotocol: raft\nnodes: [n1, n1]\n", "named twice"),
    ("node-named-lab", "name: h\nprotocol: raft\nnodes: [n1, lab]\n", "reserved"),
    ("timeout-0", BASE + "workload: {kind: kv, duration: 2s, timeout: 0s}\n", "above 0s"),
    ("fault-unknown-node", BASE + "faults:\n  - {at: 1s, crash: n9}\n", "no node or target named 'n9'"),
    ("partition-no-groups", BASE + "faults:\n  - {at: 1s, partition: []}\n", "expected groups"),
    ("unknown-protocol", "name: h\nprotocol: " + "p" * 10_000 + "\nnodes: 3\n", "unknown protocol"),
    ("unknown-config", BASE + "config: {heartbeet: 50ms}\n", "config.heartbeet"),
    ("settle-beyond-floats", BASE + "settle: " + "9" * 400 + "s\n", "settle"),
    ("duration-of-a-megabyte", BASE + "settle: " + "9" * 1_000_000 + "s\n", "settle"),
    ("heartbeat-beyond-floats", BASE + "config: {heartbeat: " + "9" * 400 + "ms}\n", "config.heartbeat"),
    ("rate-1e300", BASE + "workload: {kind: kv, duration: 1s, rate: 1e300/s}\n", "at most"),
    ("rate-inf", BASE + "workload: {kind: kv, duration: 1s, rate: inf/s}\n", "workload.rate"),
    ("bitrate-beyond-floats", BASE + "faults:\n  - {at: 1s, rate: " + "9" * 400 + "gbit}\n",
     "faults[0].rate"),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, words: str) -> None:
    lines = err.splitlines()
    assert code == 3, err
    assert len(lines) == 1, err[:2000]
    assert "Traceback" not in err and "internal error" not in err, err[:2000]
    assert lines[0].startswith("zlab: ") and words in lines[0], lines[0][:2000]
    assert len(lines[0]) <= 2100, "an error line quotes a huge value in full"


@pytest.mark.parametrize("text, words", [c[1:] for c in SCENARIOS], ids=[c[0] for c in SCENARIOS])
def test_a_hostile_scenario_is_one_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    text: str | bytes, words: str) -> None:
    path = tmp_path / "s.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    assert_refused(*run_cli(["run", str(path), "--backend", "sim", "--out", str(tmp_path / "out")],
                            capsys), words)
    assert not (tmp_path / "out").exists(), "refused only after the run started"


def test_refusals_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Where a refusal has a place in the file, the line says file:line: field:."""
    path = tmp_path / "s.yaml"
    for text, where in (
            (BASE + "workload:\n  kind: kv\n  duration: 2s\n  read_ratoi: 0.5\n", ":7: workload.read_ratoi:"),
            (BASE + "workload: {kind: kv, duration: 2s}\nfaults:\n  - {at: 1s, crash: n1}\n"
             "  - {at: 5s, crash: n2}\n", ":7: faults[1].at:"),
            (TWOPC + "  - {name: a, role: coordinator}\n  - {name: b, role: boss}\n", ":5: nodes[1]:"),
            (BASE + "description: &a [*a]\n", ":4:"),
            (BASE + under("defs", bomb()), ":9:")):   # l4, whose copies pass the limit
        path.write_text(text)
        code, err = run_cli(["run", str(path), "--backend", "sim"], capsys)
        assert code == 3 and f"zlab: {path}{where}" in err, err[:500]


def test_a_billion_laughs_is_refused_fast() -> None:
    import time
    t0 = time.process_time()
    for key in ("description", "seed"):
        with pytest.raises(LabError, match="YAML bomb"):
            load_scenario_text(BASE + under("defs", bomb(12)) + f"x: 1\n{key}: *l12\n")
    assert time.process_time() - t0 < 5, "alias expansion was walked instead of counted"


def test_aliases_and_merges_a_scenario_may_use_still_load() -> None:
    s = load_scenario_text(BASE.replace("nodes: 3\n", "") + textwrap.dedent("""\
        nodes:
          - &node {name: n1, region: eu, rack: [1, 2, 3]}
          - {<<: *node, name: n2}
          - {<<: *node, name: n3, region: us}
        workload: &w {kind: kv, duration: 3s}
        faults:
          - &crash {at: 1s, crash: n1}
          - {<<: *crash, at: 2s}
        """))
    assert [(n.name, n.region) for n in s.nodes] == [("n1", "eu"), ("n2", "eu"), ("n3", "us")]
    assert [f.at for f in s.faults] == [1.0, 2.0]


# -- command lines ---------------------------------------------------------------------------------

def _scenario(tmp_path: Path) -> str:
    p = tmp_path / "ok.yaml"
    p.write_text(BASE + "workload: {kind: kv, duration: 1s}\n")
    return str(p)


def _file(name: str, data: bytes) -> Callable[[Path], str]:
    def make(tmp_path: Path) -> str:
        p = tmp_path / name
        p.write_bytes(data)
        return str(p)
    return make


INVOKE = {"process": 0, "type": "invoke", "f": "read", "key": "x", "value": None, "ts": 0}
HISTORY_LINE = b'{"process": 0, "type": "invoke", "f": "read", "key": "x", "value": null, "ts": 0}\n'

# (id, argv made in tmp_path, words the one line must hold)
COMMANDS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("seed-negative", lambda t: ["run", _scenario(t), "--seed", "-1"], "--seed"),
    ("seed-fraction", lambda t: ["run", _scenario(t), "--seed", "1.5"], "--seed"),
    ("seed-too-big", lambda t: ["run", _scenario(t), "--seed", str(2**64)], "--seed"),
    ("time-limit-negative", lambda t: ["run", _scenario(t), "--time-limit", "-1"], "--time-limit"),
    ("time-limit-word", lambda t: ["check", "--history", "h", "--time-limit", "soon"], "--time-limit"),
    ("time-limit-nan", lambda t: ["check", "--history", "h", "--time-limit", "nan"], "--time-limit"),
    ("up-seed-negative", lambda t: ["up", _scenario(t), "--seed", "-5"], "--seed"),
    ("history-binary", lambda t: ["check", "--history", _file("h.jsonl", bytes(range(256)) * 4)(t)], "h.jsonl:1:"),
    ("history-not-utf8", lambda t: ["check", "--history", _file("h.jsonl", HISTORY_LINE + b"\xff\xfe\n")(t)],
     "h.jsonl:2: not UTF-8"),
    ("history-empty", lambda t: ["check", "--history", _file("h.jsonl", b"")(t)], "no client operations"),
    ("history-blank-lines", lambda t: ["check", "--history", _file("h.jsonl", b"\n \n")(t)],
     "no client operations"),
    ("history-deep-json", lambda t: ["check", "--history", _file("h.jsonl", b"[" * 100_000 + b"]" * 100_000)(t)],
     "nested too deeply"),
    ("history-5000-digits", lambda t: ["check", "--history", _file("h.jsonl", b"7" * 5000)(t)], "h.jsonl:1:"),
    ("history-a-directory", lambda t: ["check", "--history", str(t)], "cannot read"),
    ("history-missing", lambda t: ["check", "--history", str(t / "none.jsonl")], "cannot read"),
    ("edn-binary", lambda t: ["check", "--history", _file("h.edn", bytes(range(256)) * 4)(t)], "not UTF-8"),
    ("edn-empty", lambda t: ["check", "--history", _file("h.edn", b"[]")(t)], "no client operations"),
    ("check-no-run-dir", lambda t: ["check", str(t / "nothing")], "not a run directory"),
    ("fault-delay-to-itself", lambda t: ["fault", "L", "delay", "n1", "100ms", "--to", "n1"], "no link to itself"),
    ("fault-loss-to-itself", lambda t: ["fault", "L", "loss", "n1", "5%", "--to", "n1"], "no link to itself"),
    ("fault-partition-of-nothing", lambda t: ["fault", "L", "partition", ",", ","], "names no node"),
    ("up-name-300", lambda t: ["up", _scenario(t), "--name", "a" * 300], "bad lab name"),
    ("status-name-300", lambda t: ["status", "a" * 300], "bad lab name"),
    ("down-name-with-slash", lambda t: ["down", "../x"], "bad lab name"),
    ("protocol-unknown", lambda t: ["protocols", "nope"], "nope"),
    ("out-not-a-directory", lambda t: ["run", _scenario(t), "--backend", "sim", "--out", "/dev/null/x"],
     "/dev/null/x: Not a directory"),
    ("logs-lines-word", lambda t: ["logs", "L", "n1", "--lines", "many"], "--lines"),
    ("unknown-flag", lambda t: ["run", _scenario(t), "--fast"], "unrecognized arguments"),
    ("unknown-command", lambda t: ["explode"], "invalid choice"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_a_hostile_command_line_is_one_line_and_exit_3(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: Callable[[Path], list[str]], words: str) -> None:
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    assert_refused(*run_cli(argv(tmp_path), capsys), words)
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())


# -- a damaged run directory -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory's data (300 ms of three Raft nodes under a kv workload, simulated;
    the files the checks read, as a run writes them, without the plots)."""
    from lab import report
    from lab.runner import run_scenario
    scenario = load_scenario_text(BASE + "workload: {kind: kv, duration: 300ms, rate: 20/s}\n"
                                  "settle: 300ms\n", path="s.yaml")
    r = run_scenario(scenario, "sim", seed=1, quiet=True, write=False)
    out = tmp_path_factory.mktemp("run")
    report.write_data(out, r.resolved, r.trace, r.history, r.final, {})
    return out


DAMAGE: list[tuple[str, str, bytes, str]] = [
    ("trace-not-utf8", "trace.jsonl", b'{"ts": 0, "node": "n1"}\n\xc3\x28\n', "trace.jsonl:2: not UTF-8"),
    ("trace-binary", "trace.jsonl", bytes(range(128, 256)) * 8, "trace.jsonl:1: not UTF-8"),
    ("history-not-utf8", "history.jsonl", HISTORY_LINE + b"\x80\n", "history.jsonl:2: not UTF-8"),
    ("history-deep", "history.jsonl", b"[" * 50_000 + b"]" * 50_000 + b"\n", "history.jsonl:1:"),
    ("final-not-utf8", "final.json", b'{"reads":\n {"k0": "\xff"}}', "final.json:2: not UTF-8"),
    ("final-not-json", "final.json", b'{"reads": ', "final.json:1: not JSON"),
    ("final-deep", "final.json", b"[" * 100_000 + b"]" * 100_000, "final.json"),
    ("scenario-binary", "scenario.yaml", bytes(range(256)) * 4, "scenario.yaml:2: not a UTF-8"),
    ("scenario-deep", "scenario.yaml", b"a: " + b"[" * 5000 + b"]" * 5000, "scenario.yaml:1:"),
    ("scenario-bomb", "scenario.yaml", bomb().encode(), "YAML bomb"),
    ("scenario-a-list", "scenario.yaml", b"- 1\n", "expected a mapping"),
]


def test_the_undamaged_run_directory_checks(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The damage below is what makes each check refuse, not the directory itself."""
    code, _ = run_cli(["check", str(run_dir)], capsys)
    assert code == 0


@pytest.mark.parametrize("name, data, words", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_run_directory_is_one_line_and_exit_3(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        name: str, data: bytes, words: str) -> None:
    damaged = tmp_path / "r"
    shutil.copytree(run_dir, damaged)
    (damaged / name).write_bytes(data)
    assert_refused(*run_cli(["check", str(damaged)], capsys), words)


# -- the installed command, and nothing hides a bug ----------------------------------------------------

def test_the_console_command_exits_3_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(BASE + "seed: " + "[" * 5000 + "]" * 5000 + "\n")
    p = subprocess.run([sys.executable, "-m", "lab.cli", "run", str(path), "--backend", "sim"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 3 and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_a_bug_is_one_line_that_says_internal_error(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort: an exception zlab did not mean is still exit 3 and one line, and says it
    is a bug (not bad input); ZLAB_DEBUG=1 adds the traceback."""
    import lab.cli

    def broken(args: object) -> int:
        raise KeyError("boom")
    monkeypatch.setattr(lab.cli, "cmd_protocols", broken)
    code, err = run_cli(["protocols"], capsys)
    assert code == 3 and err.splitlines() == [
        "zlab: internal error: KeyError: 'boom' -- a bug in zlab; ZLAB_DEBUG=1 prints the traceback"]
    monkeypatch.setenv("ZLAB_DEBUG", "1")
    code, err = run_cli(["protocols"], capsys)
    assert code == 3 and "Traceback" in err and err.splitlines()[-1].startswith("zlab: internal error")


# -- every value of shipped scenarios, replaced by something hostile ----------------------------------

MUTATED = ("raft-partition", "2pc-coordinator-crash", "paxos-duel", "pbft-7-byzantine",
           "gossip-partition", "swim-crash-loss", "multipaxos-leader-crash")
HOSTILE_VALUES: list[object] = [None, [], {}, -1, 2**70, 1.5, True, "", "x" * 5000, "9" * 400 + "s",
                                [[[[[[[[[["deep"]]]]]]]]]], {"name": {"name": None}}]


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [path] if path else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out += _paths(child, (*path, key))
    return out


def _replaced(data: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {k: _replaced(v, rest, new) if k == head else v for k, v in data.items()}
    return [_replaced(v, rest, new) if i == head else v for i, v in enumerate(data)]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", MUTATED)
def test_every_value_of_a_scenario_replaced_loads_or_is_refused(name: str) -> None:
    """Each value of a shipped scenario, replaced by each hostile value, either still loads or is
    refused as a LabError: no TypeError, KeyError or other crash in the loader."""
    import yaml
    data = yaml.safe_load((ROOT / "topologies" / f"{name}.yaml").read_text())
    refused = 0
    for path in _paths(data):
        for value in HOSTILE_VALUES:
            text = yaml.safe_dump(_replaced(data, path, value), sort_keys=False)
            try:
                load_scenario_text(text, path=f"{name}.yaml")
            except LabError as e:
                refused += 1
                assert len(str(e)) < 1000, str(e)[:300]
            except Exception as e:  # noqa: BLE001 - the point: name the path that crashed
                raise AssertionError(f"{name}: {path} = {str(value)[:40]!r}: "
                                     f"{type(e).__name__}: {e}") from e
    assert refused > len(_paths(data)), "most replacements should be refused"
