"""lab/clientrule.py: where each attempt of a request goes (Targets) and when its answers make
a result accepted (Tally), as the runner's clients, `zlab client` and the benchmarks use them."""

from __future__ import annotations

from lab.clientrule import RETRY_CAP, Tally, Targets
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


class Clock:
    """A virtual clock with call_at, as a backend gives the clients."""

    def __init__(self) -> None:
        self.t = 0.0
        self.due: list[tuple[float, int, object]] = []
        self.seq = 0

    def now(self) -> float:
        return self.t

    def call_at(self, t: float, fn: object) -> None:
        self.seq += 1
        self.due.append((t, self.seq, fn))

    def run_until(self, t: float) -> None:
        while True:
            ready = sorted((d for d in self.due if d[0] <= t), key=lambda d: d[:2])
            if not ready:
                break
            self.due.remove(ready[0])
            self.t = ready[0][0]
            ready[0][2]()          # type: ignore[operator]
        self.t = t


def test_requests_answered_within_client_retry_keep_it_as_the_retry_timer() -> None:
    t = Targets(ClientRule(replies=2, first=2, retry=0.3), NODES)
    assert t.retry_after() == 0.3
    for took in (0.002, 0.05, 0.004, 0.01) * 10:
        t.observe(took, 1)
    assert t.retry_after() == 0.3


def test_slow_answers_lengthen_the_retry_timer_up_to_its_cap_and_retried_requests_do_not_count() -> None:
    t = Targets(ClientRule(replies=2, first=2, retry=0.3), NODES)
    t.observe(5.0, 2)                       # retried: Karn's rule, no sample
    assert t.retry_after() == 0.3
    for _ in range(30):
        t.observe(1.0, 1)
    assert 1.0 < t.retry_after() < 1.5      # about what requests take
    for _ in range(30):
        t.observe(50.0, 1)
    assert t.retry_after() == RETRY_CAP * 0.3
    for _ in range(60):
        t.observe(0.01, 1)
    assert t.retry_after() == 0.3           # back as soon as requests are quick again


def test_under_a_burst_the_first_retry_backs_the_others_off() -> None:
    t, clock = Targets(ClientRule(replies=2, first=2, retry=0.3), NODES), Clock()
    sent: list[tuple[int, float]] = []
    for i in range(100):                    # 100 requests at once, none answered for 1 s
        t.retry_later(clock.now, clock.call_at, lambda: clock.t < 1.0,
                      lambda i=i: sent.append((i, clock.t)))
    clock.run_until(2.0)
    # A fixed timer would have sent all 100 again at 0.3 s (and again at 0.6 and 0.9):
    # here one at 0.3 s, one at 0.6 s (the backed-off timer); at 1.2 s all are answered.
    assert sent == [(0, 0.3), (1, 0.6)]
    assert t.retry_after() == 1.2


def test_a_request_with_a_deadline_is_retried_within_half_of_the_time_left() -> None:
    t, clock = Targets(ClientRule(replies=2, first=2, retry=0.3), NODES), Clock()
    for _ in range(30):
        t.observe(5.0, 1)
    assert t.retry_after() == RETRY_CAP * 0.3
    sent: list[float] = []
    t.retry_later(clock.now, clock.call_at, lambda: True, lambda: sent.append(clock.t), deadline=1.0)
    clock.run_until(2.0)
    assert sent == [0.5]


def test_answers_are_the_same_result_exactly_when_their_json_is() -> None:
    from lab.clientrule import result_key
    same = [({"type": "ok", "value": 1, "primary": "n2"}, {"primary": "n2", "value": 1, "type": "ok"}),
            ({"type": "ok", "value": None}, {"value": None, "type": "ok"}),
            ({"type": "ok", "value": [1, 2]}, {"value": [1, 2], "type": "ok"})]
    for a, b in same:
        assert result_key(a) == result_key(b)
    different = [({"value": 1}, {"value": True}), ({"value": 1}, {"value": 1.0}),
                 ({"value": 1}, {"value": "1"}), ({"value": None}, {"value": "null"}),
                 ({"value": [1]}, {"value": "[1]"}), ({"a": 1}, {"a": 1, "b": None})]
    for a, b in different:
        assert result_key(a) != result_key(b), (a, b)
