"""The one interface between a protocol and the world.

A protocol is a *core*: a class that reacts to four things -- its own start
(or restart), a message from a peer, one of its timers firing, and a client
request -- and acts only through the :class:`Context` it is given. It does no
I/O, reads no clock and draws no randomness of its own (rule 1 of DESIGN.md),
so the simulator, the local agent and the container agent can all host the
very same object.

The smallest useful core (see ``nodes/protocols/register.py``)::

    class Register(Core):
        name = "register"
        message_types = frozenset()

        def start(self) -> None:
            self.value = self.ctx.storage.get("value")

        def handle_request(self, client: str, op: dict) -> None:
            if op["f"] == "write":
                self.ctx.storage.put("value", op["value"])
                self.value = op["value"]
                self.ctx.reply(client, {"type": "ok"})
            else:
                self.ctx.reply(client, {"type": "ok", "value": self.value})

Contract for the runtime (``lab/sim``, ``nodes/agent.py``):

* ``start()`` is called once when the node starts and again after every
  restart, on a *fresh* core object: volatile state is gone, ``ctx.storage``
  is what the core had made durable.
* Handlers run one at a time, never concurrently.
* Writes to ``storage`` made in a handler are durable before any message that
  handler sent leaves the node, and before any reply reaches a client
  (etcd's "persist, then send"). The agent batches them into one fsync.
* The one exception, which a core asks for: messages of a type in
  ``early_sends`` may leave *before* the handler's writes are durable (Raft
  thesis 10.2.1: a leader sends AppendEntries while it writes its own log).
  The runtime then calls ``handle_persisted()`` once every write made so far is
  durable, and the core must not count on those writes before that call (a
  Raft leader counts itself in a quorum only then). A crash in between loses
  the writes, not the early messages. Every other message and every reply
  still waits for the writes.
* ``set_timer(name, after)`` replaces a pending timer of the same name.
* Client requests are dicts (``{"f": "write", "key": "x", "value": 1,
  "client": "c1", "seq": 7}``); results are dicts with ``type`` in
  ``ok``/``fail``/``info`` as in the history contract. A core that is not the
  one to serve a request answers ``{"type": "fail", "error": "not_leader",
  "leader": <name or None>}`` and the client retries there.
* A core may declare how a client accepts a result (:meth:`Core.client_rule`,
  PBFT: f+1 matching replies, signed requests sent first to the primary and f
  more replicas, then to every replica); the runner's clients, ``zlab client``
  and the benchmarks follow it (lab/clientrule.py), so the core stays a replica.
* A core that signs (``signs = True``) finds a ``nodes.signing.Keyring`` at
  ``ctx.keys``; the runtime owns the keys (None for other cores).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from nodes.units import parse_bitrate, parse_duration, parse_percent, parse_rate, shown

if TYPE_CHECKING:
    from nodes.signing import Keyring


class Storage(Protocol):
    """Durable state. Values are anything msgpack can encode."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def put(self, key: str, value: Any) -> None: ...
    def log_append(self, name: str, entries: list[Any]) -> None: ...
    def log_truncate(self, name: str, length: int) -> None:
        """Keep the first ``length`` entries of log ``name``."""
    def log_read(self, name: str) -> list[Any]: ...


class Random(Protocol):
    """The part of ``random.Random`` a core may use; the runtime seeds it."""

    def random(self) -> float: ...
    def uniform(self, a: float, b: float) -> float: ...
    def randrange(self, start: int, stop: int | None = None) -> int: ...
    def choice(self, seq: Any) -> Any: ...
    def shuffle(self, x: list[Any]) -> None: ...
    def sample(self, population: Any, k: int) -> list[Any]: ...


class Context(Protocol):
    """What a core may see and do. Provided by the runtime."""

    node: str                         # this node's name, e.g. "n3"
    nodes: Mapping[str, Mapping[str, Any]]  # every node of the lab -> its spec (role, region, ...)
    storage: Storage
    rng: Random
    keys: Keyring | None              # signing keys, for a core with ``signs = True``

    def now(self) -> float: ...       # seconds since the run started (virtual in sim)
    def send(self, dst: str, type: str, body: dict[str, Any]) -> None: ...
    def set_timer(self, name: str, after: float) -> None: ...
    def cancel_timer(self, name: str) -> None: ...
    def reply(self, client: str, result: dict[str, Any]) -> None: ...
    def trace(self, ev: str, **fields: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class Tunables:
    """Base of every protocol's tunables.

    Each field carries ``metadata={"unit": ..., "doc": ...}``. ``unit`` is one
    of ``s`` (duration, YAML ``150ms``), ``s-range`` (``[150ms, 300ms]``),
    ``%`` (YAML ``5%``), ``/s``, ``bit/s``, ``count``, ``bool``, ``name`` or
    ``names``; ``doc`` says what the knob does and what turning it costs.
    """

    bugs: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={"unit": "names", "doc": "named fault variants to switch on (see `zlab protocols`); "
                  "for teaching and for the checkers' own tests, never for real runs"},
    )


@dataclasses.dataclass(frozen=True)
class ClientRule:
    """How a client of a core accepts a result, when the default (one answer, ``not_leader``
    redirects) is not enough: a core of replicas that may lie (PBFT) asks for ``replies``
    matching answers from distinct nodes.

    With ``first`` (Castro & Liskov's client), a first attempt goes to that many nodes only:
    the primary the client believes current -- named by the ``primary`` key of an accepted
    result, the lab's first node until one did -- and the nodes after it in the lab's order;
    every later attempt goes to every node. ``first`` must be at least ``replies``, or no
    first attempt could be accepted."""

    replies: int = 1          # matching results from distinct nodes before one is accepted
    broadcast: bool = True    # attempts go to every node (each answers on its own); see first
    sign: bool = False        # requests carry the lab's client signature (nodes/signing.py)
    retry: float = 0.5        # s between attempts while no result is accepted
    first: int = 0            # nodes a first attempt goes to (0: as every other attempt)


class Core:
    """Base class of protocol cores. Subclasses set the class attributes."""

    name: ClassVar[str] = ""
    message_types: ClassVar[frozenset[str]] = frozenset()
    tunables: ClassVar[type[Tunables]] = Tunables
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    bugs: ClassVar[Mapping[str, str]] = {}          # bug name -> what it breaks
    #: bug name -> the checks the docs say it breaks: a sweep over the bug must see one of
    #: them violated (not merely some check), and every bug names at least one
    bug_breaks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: the checks a run of this protocol gets when its scenario names none
    default_checks: ClassVar[tuple[str, ...]] = ()
    #: further checks that mean something for this protocol (a scenario may name them);
    #: the loader refuses any other check, so one cannot pass vacuously on the wrong protocol
    optional_checks: ClassVar[tuple[str, ...]] = ()
    #: the role names a node may take in YAML (`role: ...`); empty: the core reads no roles
    node_roles: ClassVar[tuple[str, ...]] = ()
    #: Byzantine behaviours a node may be given in YAML (`byzantine: [name, ...]`) -> what it does
    behaviours: ClassVar[Mapping[str, str]] = {}
    #: whether the core needs ``ctx.keys`` (ed25519 signing keys made by the runtime)
    signs: ClassVar[bool] = False
    #: message types that may leave before the sending handler's storage writes are durable
    #: (the contract's one exception to "persist, then send", above); the runtime then calls
    #: :meth:`handle_persisted` once they are
    early_sends: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: Context, config: Tunables) -> None:
        self.ctx = ctx
        self.config = config

    def start(self) -> None:
        """First start or restart: rebuild volatile state from ``ctx.storage``."""

    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        """A message from peer ``src``; ``type`` is one of ``message_types``."""

    def handle_timer(self, name: str) -> None:
        """Timer ``name`` fired."""

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        """A client operation; answer with ``ctx.reply(client, result)``, now or later."""
        self.ctx.reply(client, {"type": "fail", "error": "unsupported"})

    def handle_persisted(self) -> None:
        """Every storage write made so far is durable. Called only for a core with
        ``early_sends``, after each flush that wrote something."""

    def status(self) -> dict[str, Any]:
        """A small summary for the orchestrator, e.g. ``{"role": "leader", "term": 3, "leader": "n1"}``."""
        return {}

    def has_bug(self, bug: str) -> bool:
        return bug in self.config.bugs

    @classmethod
    def client_rule(cls, config: Tunables, nodes: list[str]) -> ClientRule | None:
        """How clients accept a result from a lab of ``nodes`` running this core with ``config``;
        None: the default (send to one node, take its answer, follow ``not_leader``)."""
        return None

    @classmethod
    def check_nodes(cls, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        """Refuse (:class:`NodesError`) a lab of ``nodes`` (name -> spec) this core cannot run;
        by default, a role that is not one of :attr:`node_roles` where the core has roles."""
        if not cls.node_roles:
            return
        for name, spec in nodes.items():
            for role in role_names(spec.get("role")):
                if role not in cls.node_roles:
                    raise NodesError(f"{cls.name} has no role {shown(role)} "
                                     f"(its roles: {', '.join(cls.node_roles)})", name)

    @classmethod
    def applicable_checks(cls) -> tuple[str, ...]:
        """Every check a scenario of this protocol may name: the defaults, then the optional ones."""
        return (*cls.default_checks, *(c for c in cls.optional_checks if c not in cls.default_checks))


def role_names(role: Any) -> tuple[str, ...]:
    """A node spec's ``role`` as a tuple of names: YAML gives one name, a list of them, or none."""
    if role is None:
        return ()
    if isinstance(role, str):
        return (role,)
    return tuple(r for r in role if isinstance(r, str))


class NodesError(ValueError):
    """The lab's nodes do not suit a protocol; ``node`` names the one at fault (None: the set)."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class ConfigValueError(ValueError):
    """A protocol config value is wrong; ``field`` names it for the YAML loader."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_timing(election_timeout: tuple[float, float], heartbeat: float) -> None:
    """A leader-based core's two timers (Raft's, Multi-Paxos's): an election timeout above 0
    and a heartbeat below its low end. Raises :class:`ConfigValueError`."""
    lo = election_timeout[0]
    if lo <= 0:
        raise ConfigValueError("election_timeout", f"must be above 0, got {lo}s")
    if not 0 < heartbeat < lo:
        raise ConfigValueError("heartbeat", f"must be above 0 and below the election timeout's "
                               f"low end ({lo}s), got {heartbeat}s")


def convert(unit: str, value: Any) -> Any:
    """A YAML value in ``unit`` (see :class:`Tunables`) as Python: seconds, fractions, ints...
    Raises ValueError saying what was expected. Checker parameters use the same units."""
    if unit == "s":
        return value if isinstance(value, float) and math.isfinite(value) else parse_duration(value)
    if unit == "s-range":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"expected a range like [150ms, 300ms], got {shown(value)}")
        lo, hi = (convert("s", v) for v in value)
        if lo > hi:
            raise ValueError(f"range low end {lo}s is above its high end {hi}s")
        return (lo, hi)
    if unit == "%":
        return value if isinstance(value, float) and math.isfinite(value) else parse_percent(value)
    if unit == "/s":
        return parse_rate(value)
    if unit == "bit/s":
        return parse_bitrate(value)
    if unit == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a whole number >= 0, got {shown(value)}")
        return value
    if unit == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {shown(value)}")
        return value
    if unit == "name":
        if not isinstance(value, str):
            raise ValueError(f"expected a name, got {shown(value)}")
        return value
    if unit == "names":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of names, got {shown(value)}")
        return tuple(value)
    raise AssertionError(f"unknown unit {unit!r}")


def build_config(core: type[Core], raw: Mapping[str, Any] | None) -> Tunables:
    """Turn a YAML ``config:`` mapping into the core's tunables.

    ``preset: NAME`` applies one of ``core.presets`` first; explicit keys win.
    Raises :class:`ConfigValueError` naming the offending field.
    """
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(core.tunables)}
    values: dict[str, Any] = {}
    preset = raw.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in core.presets:
            known = ", ".join(sorted(core.presets)) or "none"
            raise ConfigValueError("preset", f"unknown preset {shown(preset)} (known: {known})")
        values.update(core.presets[preset])
    values.update(raw)
    out: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigValueError(key, f"unknown setting for {core.name} (known: {known})")
        try:
            out[key] = convert(f.metadata.get("unit", "name"), value)
        except ValueError as e:
            raise ConfigValueError(key, str(e)) from None
    for bug in out.get("bugs", ()):
        if bug not in core.bugs:
            known = ", ".join(sorted(core.bugs)) or "none"
            raise ConfigValueError("bugs", f"{core.name} has no bug named {shown(bug)} (known: {known})")
    return core.tunables(**out)


def describe_tunables(core: type[Core]) -> list[dict[str, Any]]:
    """Name, unit, default and doc of every tunable: for `zlab protocols` and the docs."""
    rows = []
    for f in dataclasses.fields(core.tunables):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append({"name": f.name, "unit": f.metadata.get("unit", ""),
                     "default": default, "doc": f.metadata.get("doc", "")})
    return rows
