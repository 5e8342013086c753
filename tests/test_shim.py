"""The agent's fault shim: rules as state, seeded draws, partitions at both ends."""

from __future__ import annotations

import statistics

import pytest

from nodes.shim import LinkRule, Shim


def test_perfect_by_default():
    s = Shim(1)
    assert not s.active
    assert s.outgoing("n2") == [0.0] and s.incoming("n2") is None


def test_cuts_drop_in_both_paths_and_are_replaced_as_a_whole():
    s = Shim(1)
    s.set_rules({"cut_out": ["n2"], "cut_in": ["n3"]})
    assert s.active
    assert s.outgoing("n2") == "partition" and s.outgoing("n3") == [0.0]
    assert s.incoming("n3") == "partition" and s.incoming("n2") is None
    s.set_rules({"cut_out": []})                 # only cut_out given: cut_in stays
    assert s.outgoing("n2") == [0.0] and s.incoming("n3") == "partition"
    s.set_rules({"cut_in": []})
    assert not s.active


def test_delay_and_jitter_bounds():
    s = Shim(7)
    s.set_rules({"links": {"n2": {"delay": 0.1, "jitter": 0.02}}})
    ds = [s.outgoing("n2")[0] for _ in range(2000)]
    assert all(0.08 <= d <= 0.12 for d in ds)
    assert abs(statistics.mean(ds) - 0.1) < 0.003
    assert s.outgoing("n3") == [0.0]             # other peers untouched


@pytest.mark.parametrize("dist", ["normal", "exponential"])
def test_distributions_spread_around_delay(dist):
    s = Shim(3)
    s.set_rules({"links": {"n2": {"delay": 0.05, "jitter": 0.01, "distribution": dist}}})
    ds = [s.outgoing("n2")[0] for _ in range(3000)]
    assert min(ds) >= 0.0
    assert statistics.pstdev(ds) > 0.005
    if dist == "exponential":
        assert min(ds) >= 0.05 and abs(statistics.mean(ds) - 0.06) < 0.002


def test_constant_ignores_jitter():
    s = Shim(3)
    s.set_rules({"links": {"n2": {"delay": 0.05, "jitter": 0.01, "distribution": "constant"}}})
    assert {s.outgoing("n2")[0] for _ in range(100)} == {0.05}


def test_loss_duplicate_reorder_rates():
    s = Shim(11)
    s.set_rules({"links": {"n2": {"loss": 0.2, "duplicate": 0.1, "delay": 0.01, "reorder": 0.3}}})
    out = [s.outgoing("n2") for _ in range(20000)]
    lost = sum(o == "loss" for o in out) / len(out)
    kept = [o for o in out if o != "loss"]
    dup = sum(len(o) == 2 for o in kept) / len(kept)
    late = sum(d > 0.0100001 for o in kept for d in o) / sum(len(o) for o in kept)
    assert 0.18 < lost < 0.22 and 0.08 < dup < 0.12 and 0.25 < late < 0.35
    assert max(d for o in kept for d in o) <= 0.01 + 2 * 0.01 + 1e-9


def test_same_seed_same_draws():
    def draws(seed):
        s = Shim(seed)
        s.set_rules({"links": {"n2": {"loss": 0.5, "delay": 0.01, "jitter": 0.01}}})
        return [s.outgoing("n2") for _ in range(200)]
    assert draws("a") == draws("a") != draws("b")


def test_perfect_link_rule_removes_the_link():
    s = Shim(1)
    s.set_rules({"links": {"n2": {"delay": 0.1}}})
    s.set_rules({"links": {"n2": {}}})
    assert not s.active and s.rules()["links"] == {}


def test_reset_clears_then_applies():
    s = Shim(1)
    s.set_rules({"cut_out": ["n2"], "links": {"n3": {"loss": 0.5}}})
    s.set_rules({"reset": True, "cut_in": ["n4"]})
    assert s.rules() == {"cut_out": [], "cut_in": ["n4"], "links": {}}


@pytest.mark.parametrize("bad", [
    {"links": {"n2": {"loss": 1.5}}},
    {"links": {"n2": {"delay": -1}}},
    {"links": {"n2": {"delay": "100ms"}}},
    {"links": {"n2": {"distribution": "pareto"}}},
    {"links": ["n2"]},
    {"cut_out": "n2"},
    {"cut_in": [1, 2]},
])
def test_bad_rules_change_nothing(bad):
    s = Shim(1)
    s.set_rules({"cut_out": ["n5"], "links": {"n3": {"delay": 0.01}}})
    before = s.rules()
    with pytest.raises((ValueError, TypeError)):
        s.set_rules({**bad, "cut_in": ["n9"]} if "cut_in" not in bad else bad)
    assert s.rules() == before


def test_link_rule_ignores_rate_and_none():
    r = LinkRule.from_dict({"delay": 0.01, "rate": 1000, "jitter": None})
    assert r == LinkRule(delay=0.01)
