"""The scenario data model: what a topology/scenario YAML file means, after parsing.

Knows nothing of YAML (``lab/topology.py`` reads files into these) nor of any
runtime (backends read these). Durations are float seconds, percentages are
fractions, rates are per second, bit rates are bits per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodes.protocols.core import role_names

MAX_SEED = 2**63 - 1      # a seed is a signed 64-bit number: `seed:` and `--seed` alike


@dataclass(frozen=True)
class LinkParams:
    """How one directed link behaves. The defaults are a perfect link."""

    delay: float = 0.0               # s, one way
    jitter: float = 0.0              # s, spread around delay
    distribution: str = "uniform"    # constant | uniform | exponential (jitter's shape)
    loss: float = 0.0                # fraction of messages dropped
    duplicate: float = 0.0           # fraction of messages delivered twice
    reorder: float = 0.0             # fraction of messages given an extra random delay (up to 2x delay+jitter)
    rate: int | None = None          # bit/s, None = unlimited

    def merged(self, **changes: Any) -> LinkParams:
        return LinkParams(**{**self.__dict__, **{k: v for k, v in changes.items() if v is not None}})


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str | tuple[str, ...] | None = None   # one name, or several (Paxos: proposer, acceptor, learner)
    region: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)   # any other keys of the YAML node

    @property
    def roles(self) -> tuple[str, ...]:
        """Every role this node plays (none when the spec names none)."""
        return role_names(self.role)

    def as_dict(self) -> dict[str, Any]:
        # A list of roles goes out as a list: what YAML and JSON give back (and msgpack carries).
        role = list(self.role) if isinstance(self.role, tuple) else self.role
        return {"name": self.name, "role": role, "region": self.region, **self.attrs}


@dataclass(frozen=True)
class LinkRule:
    """A per-link override from ``network.links``, already expanded to one directed link."""

    src: str
    dst: str
    params: LinkParams


@dataclass(frozen=True)
class NetworkSpec:
    default: LinkParams = LinkParams()
    links: tuple[LinkRule, ...] = ()

    def link(self, src: str, dst: str) -> LinkParams:
        """The effective parameters of src -> dst: the default, then the last matching override."""
        out = self.default
        for rule in self.links:
            if rule.src == src and rule.dst == dst:
                out = rule.params
        return out


# Keys of every workload; a kind's own keys are its class's ``params`` (lab/workloads/).
WORKLOAD_KEYS = ("kind", "clients", "rate", "concurrency", "duration", "timeout")


@dataclass(frozen=True)
class WorkloadSpec:
    kind: str = "none"               # kv | transfer | none
    clients: int = 1                 # count of client processes
    rate: float | None = None        # ops/s over all clients (open loop); None = closed loop
    concurrency: int | None = None   # in-flight ops per client (closed loop); default 1
    duration: float = 0.0            # s
    timeout: float = 1.0             # s; an op unanswered by then is recorded as info
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific keys (keys, read_ratio, accounts, ...)


@dataclass(frozen=True)
class FaultStep:
    """One entry of the ``faults`` timeline, before symbolic targets are resolved.

    ``action`` is one of partition, heal, crash, restart, pause, resume, delay,
    loss, duplicate, reorder, rate. ``args`` keeps the YAML value's meaning:
    a target spec (``"leader"``, ``"n3"``, ``["n1", "n2"]``) for node faults, a
    list of groups for partition, a dict of link settings for link faults.
    ``duration`` (YAML ``for:``) reverts the fault that long after it applies.
    """

    at: float
    action: str
    args: Any
    oneway: bool = False
    duration: float | None = None
    line: int | None = None          # where it stands in the YAML, for messages


@dataclass
class Scenario:
    name: str
    protocol: str
    nodes: list[NodeSpec]
    config: dict[str, Any] = field(default_factory=dict)     # raw protocol config (build_config parses it)
    network: NetworkSpec = NetworkSpec()
    workload: WorkloadSpec = WorkloadSpec()
    faults: list[FaultStep] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    # check -> its parameters from `checks: [{name: x, threshold: 2s}]`, in SI units
    check_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    expect: dict[str, str] = field(default_factory=dict)      # check -> "violated" | "holds"
    seed: int | None = None
    description: str = ""
    settle: float = 2.0              # s after the workload before final reads and checks
    source: str | None = None        # the YAML file it came from
    raw: dict[str, Any] = field(default_factory=dict)         # the YAML as read, for the resolved copy

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)
