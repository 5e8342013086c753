"""A Byzantine PBFT scenario on containers: signing keys made per lab and handed to each
container in its spec, an equivocating primary voted out, every check as expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.runner import run_scenario
from lab.topology import load_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.docker
def test_an_equivocating_primary_is_voted_out_on_docker(zlab_image: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    s = load_scenario(str(ROOT / "topologies" / "pbft-byzantine-primary.yaml"))
    r = run_scenario(s, "docker", out=str(tmp_path / "run"), quiet=True)
    assert r.exit_code == 0, [v.as_dict() for v in r.verdicts]
    assert {v.check: v.verdict for v in r.verdicts} == dict.fromkeys(
        ("agreement", "committed_survives_view_change", "linearizable", "progress"), "holds")
    told = [e for e in r.trace if e["ev"] == "log" and e["node"] == "n1"
            and e["data"].get("behaviour") == "equivocate"]
    assert told, "the faulty primary never equivocated"
    views = {e["node"]: e["data"]["view"] for e in r.trace
             if e["ev"] == "state" and "new_view" in e["data"]}
    assert {views.get(n) for n in ("n2", "n3", "n4")} == {1}
    assert r.stats["ok"] > 50
