"""How a client accepts a result, for cores that declare it (``Core.client_rule``; PBFT: f+1
matching replies from distinct replicas, every request signed, sent first to the primary and
f more replicas, then again to every replica).

One place for the rule, used by the runner's clients (lab/runner.py), ``zlab client``
(lab/cli_lab.py) and the benchmarks: :func:`client_rule_of` reads it from the scenario's
core and config, :class:`Targets` says where each attempt goes, :class:`Tally` counts the
answers to one request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from lab.scenario import Scenario
from nodes.protocols import get as get_protocol
from nodes.protocols.core import ClientRule, build_config

# The longest a client waits between attempts, in client_retry (rule.retry) units: a view change
# that kept requests waiting seconds must not keep later retries that late for long (the
# estimate then decays within some dozen requests).
RETRY_CAP = 8

_key = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode


def client_rule_of(scenario: Scenario) -> ClientRule | None:
    """The scenario's core's client rule, or None for the default (one answer, redirects)."""
    try:
        cls = get_protocol(scenario.protocol)
    except KeyError:
        return None
    return cls.client_rule(build_config(cls, scenario.config), scenario.node_names)


def result_key(result: dict[str, Any]) -> Any:
    """What two answers share exactly when they are the same result: for a flat map of string
    keys and string, int or null values (every kv result) its sorted items, else its JSON
    (sorted keys). The exact types keep 1 and true apart, as JSON does; a tuple never equals
    a JSON string. Cheaper than JSON for the common case: a client keys every answer."""
    for k, v in result.items():
        if type(k) is not str or (type(v) is not str and type(v) is not int and v is not None):
            return _key(result)
    return tuple(sorted(result.items()))


class Tally:
    """The answers to one request. Each node counts once (its first answer); a result is
    accepted when ``need`` nodes gave the very same one (then ``accepted`` holds it)."""

    __slots__ = ("need", "voted", "counts", "accepted")

    def __init__(self, need: int) -> None:
        self.need = need
        self.voted: set[str] = set()
        self.counts: dict[str, int] = {}
        self.accepted: dict[str, Any] | None = None

    def add(self, node: str, result: dict[str, Any]) -> bool:
        """Count ``node``'s answer; True when this answer makes its result accepted (once: an
        answer after that, even one completing another result, returns False)."""
        if node in self.voted or self.accepted is not None:
            return False
        self.voted.add(node)
        key = result_key(result)
        c = self.counts[key] = self.counts.get(key, 0) + 1
        if c == self.need:
            self.accepted = result
            return True
        return False


class Targets:
    """Where each attempt of a request goes under ``rule``, among ``nodes`` (the lab's, in its
    order), and when. Without ``rule.first``: every attempt to every node. With it: a first
    attempt to the primary this client believes current and the ``first - 1`` nodes after it
    (wrapping round), every later attempt to every node -- so a silent or lying primary, or a
    node that is down, costs one retry. The belief comes from the ``primary`` key of accepted
    results (:meth:`learn`): ``replies`` nodes vouched for it, so not a liar alone.

    When (:meth:`retry_later`): TCP's retransmission timeout (RFC 6298, with Karn's rule):
    smoothed over the times requests took to be accepted, counting only those accepted on
    their first attempt (a retried one's time says little), doubled by each retry that had to
    be sent until the next such sample, never below ``rule.retry``, at most RETRY_CAP times
    it, and at most half the time left to a request's deadline (so an op with a timeout still
    gets retried in time). While requests are answered within ``rule.retry`` (a lab that is
    not overloaded) that is ``rule.retry`` itself. Under a load that queues requests longer,
    a fixed timer would send every one of them again to every node: n more requests to check
    and answer each, on a cluster already short of CPU, which only queues them longer. So
    the first retry backs the other requests off (each retry timer looks at the estimate
    again when it fires), and the client then waits about as long as requests take.
"""

    __slots__ = ("nodes", "first", "primary", "_first_nodes", "retry", "srtt", "rttvar", "_rto")

    def __init__(self, rule: ClientRule, nodes: list[str]) -> None:
        self.nodes = list(nodes)
        self.first = rule.first if 0 < rule.first < len(self.nodes) else 0
        self.primary = ""
        self._first_nodes = self.nodes
        self._believe(self.nodes[0] if self.nodes else "")
        self.retry = rule.retry
        self.srtt: float | None = None      # smoothed time to an accepted result, s
        self.rttvar = 0.0                   # its smoothed deviation, s
        self._rto = rule.retry

    def retry_after(self) -> float:
        """Seconds from an attempt to the next one, while the request is not accepted."""
        return self._rto

    def retry_later(self, now: Callable[[], float], call_at: Callable[[float, Callable[[], None]], Any],
                    pending: Callable[[], bool], again: Callable[[], None],
                    deadline: float = math.inf) -> None:
        """After an attempt sent now: call ``again`` (the next attempt) once ``retry_after()``
        has passed since, if the request is still ``pending`` and ``deadline`` not reached;
        a timer that fires before the estimate (grown meanwhile) says waits on."""
        sent = now()
        most = max(self.retry, (deadline - sent) / 2)

        def fire() -> None:
            if not pending():
                return
            due = sent + min(self._rto, most)
            if now() < due:
                if due < deadline:
                    call_at(due, fire)
                return
            self._rto = min(2 * self._rto, RETRY_CAP * self.retry)     # back off
            again()
        due = sent + min(self._rto, most)
        if due < deadline:
            call_at(due, fire)

    def observe(self, took: float, attempts: int) -> None:
        """A request was accepted ``took`` s after its first attempt, after ``attempts`` of
        them: RFC 6298's update (gains 1/8 and 1/4) if it was the first one (Karn's rule)."""
        if attempts != 1:
            return
        if self.srtt is None:
            self.srtt, self.rttvar = took, took / 2
        else:
            self.rttvar += (abs(self.srtt - took) - self.rttvar) / 4
            self.srtt += (took - self.srtt) / 8
        self._rto = min(max(self.retry, self.srtt + 4 * self.rttvar), RETRY_CAP * self.retry)

    def of(self, attempt: int) -> list[str]:
        """The nodes attempt ``attempt`` (1 for the first) goes to (a list not to be changed)."""
        return self._first_nodes if attempt == 1 else self.nodes

    def learn(self, result: dict[str, Any]) -> None:
        """An accepted result: the primary it names (if a node of the lab) is tried first from now."""
        hint = result.get("primary")
        if hint != self.primary and type(hint) is str and hint in self.nodes:
            self._believe(hint)

    def _believe(self, primary: str) -> None:
        self.primary = primary
        if self.first:
            p, n = self.nodes.index(primary), len(self.nodes)
            self._first_nodes = [self.nodes[(p + k) % n] for k in range(self.first)]
