"""lab/clientrule.py: where each attempt of a request goes (Targets) and when its answers make
a result accepted (Tally), as the runner's clients, `zlab client` and the benchmarks use them."""

from __future__ import annotations

from lab.clientrule import Tally, Targets
from nodes.protocols.core import ClientRule

NODES = ["n1", "n2", "n3", "n4"]


def test_a_first_attempt_goes_to_the_believed_primary_and_the_next_nodes_later_ones_to_all() -> None:
    t = Targets(ClientRule(replies=2, first=2), NODES)
    assert t.of(1) == ["n1", "n2"]                # no reply yet: the lab's first node leads
    assert t.of(2) == t.of(5) == NODES
    t.learn({"type": "ok", "primary": "n4"})
    assert t.of(1) == ["n4", "n1"]                # wraps round the lab's order
    assert t.of(2) == NODES


def test_a_hint_that_names_no_node_of_the_lab_is_ignored() -> None:
    t = Targets(ClientRule(replies=2, first=2), NODES)
    t.learn({"type": "ok", "primary": "n3"})
    for bad in ({"type": "ok"}, {"type": "ok", "primary": "n9"}, {"type": "ok", "primary": 3},
                {"type": "ok", "primary": None}):
        t.learn(bad)
        assert t.of(1) == ["n3", "n4"]


def test_without_first_or_with_first_covering_the_lab_every_attempt_goes_to_every_node() -> None:
    for rule in (ClientRule(replies=2), ClientRule(replies=2, first=4), ClientRule(replies=2, first=9)):
        t = Targets(rule, NODES)
        t.learn({"type": "ok", "primary": "n3"})
        assert t.of(1) == t.of(2) == NODES


def test_a_tally_accepts_one_result_once() -> None:
    tally = Tally(2)
    assert not tally.add("n1", {"type": "ok", "value": 1})
    assert not tally.add("n1", {"type": "ok", "value": 1})        # one vote per node
    assert not tally.add("n2", {"type": "ok", "value": True})     # not the same result as 1
    assert tally.add("n3", {"value": 1, "type": "ok"})            # key order does not matter
    assert tally.accepted == {"value": 1, "type": "ok"}
    assert not tally.add("n4", {"type": "ok", "value": True})     # completes another: too late
    assert tally.accepted == {"value": 1, "type": "ok"}
