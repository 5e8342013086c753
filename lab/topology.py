"""Reading topology/scenario YAML into :class:`lab.scenario.Scenario`, and writing it back.

The file is *composed* (not just loaded) so every node keeps its line: any
mistake becomes one :class:`ConfigError` that says file, line and field, e.g.
``topologies/x.yaml:12: faults[2].at: expected a duration like 5s or 150ms, got 5``.
docs/yaml.md is the user's reference for every key read here.

:func:`scenario_to_dict` is the inverse: the resolved scenario a run
directory stores, written with explicit units (``150ms``), which loads back
into an equal :class:`Scenario`.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from lab.errors import ConfigError
from lab.scenario import (
    MAX_SEED,
    WORKLOAD_KEYS,
    FaultStep,
    LinkParams,
    LinkRule,
    NetworkSpec,
    NodeSpec,
    Scenario,
    WorkloadSpec,
)
from lab.targets import REST as TARGET_REST
from lab.targets import REST_USE
from lab.targets import SYMBOLS as TARGET_SYMBOLS
from nodes import protocols
from nodes.protocols.core import ConfigValueError, Core, NodesError, build_config
from nodes.tracelog import LEVELS
from nodes.units import (
    format_duration,
    parse_bitrate,
    parse_duration,
    parse_percent,
    parse_rate,
    shown,
)

TOP_KEYS = ("name", "description", "protocol", "nodes", "config", "network", "workload",
            "faults", "checks", "expect", "seed", "settle",
            "backend", "source", "trace")   # the last three: what a run directory's scenario.yaml adds
BACKENDS = ("sim", "local", "docker")
DISTRIBUTIONS = ("constant", "uniform", "exponential")
VERDICTS = ("holds", "violated")
NODE_ACTIONS = ("crash", "restart", "pause", "resume")
LINK_ACTIONS = ("delay", "loss", "duplicate", "reorder", "rate")
FAULT_ACTIONS = ("partition", "heal", *NODE_ACTIONS, *LINK_ACTIONS)
REVERTIBLE = ("partition", "crash", "pause", *LINK_ACTIONS)   # may carry `for:`
ONEWAY_ACTIONS = ("partition", *LINK_ACTIONS)
HEAL_WHAT = ("all", "partition", "links", "network")
MAX_NODES = 1000
# ops/s a workload may offer: its arrivals are events, and past this a run never ends
MAX_RATE = 100_000
# Node names become host names, container names and trace `node` values; `lab` is the
# orchestrator's own trace name and the symbols would make targets ambiguous.
RESERVED_NAMES = frozenset((*TARGET_SYMBOLS, "lab"))
_NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# libyaml's composer (where PyYAML was built with it) reads a big file several times faster
# than the pure-Python one, and its nodes keep their lines as well.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A scenario is a few levels deep; deeper input is hostile (it would exhaust the stack).
MAX_DEPTH = 64
# Values that aliases may add to a document beyond what it spells out: a few `<<: *defaults`
# add hundreds; a "billion laughs" document would add billions.
MAX_ALIASED = 100_000


def workload_kinds() -> tuple[str, ...]:
    """Every registered workload kind, and ``none`` (a run with no clients)."""
    from lab.workloads.registry import kinds
    return (*kinds(), "none")


def parse_distribution(value: object) -> str:
    """The shape of a link's jitter: one of :data:`DISTRIBUTIONS`."""
    if value in DISTRIBUTIONS:
        return value  # type: ignore[return-value]
    raise ValueError(f"expected one of {', '.join(DISTRIBUTIONS)}, got {shown(value)}")


# A link's settings in YAML (each a LinkParams field) -> its parser.
_LINK_KEYS: dict[str, Callable[[Any], Any]] = {
    "delay": parse_duration, "jitter": parse_duration, "distribution": parse_distribution,
    "loss": parse_percent, "duplicate": parse_percent, "reorder": parse_percent,
    "rate": parse_bitrate,
}
# Which settings each link fault may set in its mapping form; `value` names the fault's own field.
_LINK_FAULT_KEYS = {"delay": ("delay", "jitter", "distribution"), "loss": ("value",),
                    "duplicate": ("value",), "reorder": ("value",), "rate": ("rate",)}


# -- a YAML node that knows where it stands -----------------------------------------

_STR, _MERGE = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"

class _Doc:
    """What every node of one file shares: the file's name and a constructor for plain values."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ctor = SafeConstructor()


@dataclasses.dataclass
class _Y:
    node: yaml.Node
    field: str
    doc: _Doc
    key_line: int | None = None      # the line of the key this value stands under

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    @property
    def head_line(self) -> int:
        """Where a complaint about the whole value goes: its key's line (``workload:``)."""
        return self.key_line or self.line

    def error(self, message: str, field: str | None = None, line: int | None = None) -> ConfigError:
        return ConfigError(message, path=self.doc.path, line=line or self.line,
                           field=(field if field is not None else self.field) or None)

    def child(self, node: yaml.Node, suffix: str, key_line: int | None = None) -> _Y:
        sep = "" if not self.field or suffix.startswith("[") else "."
        return _Y(node, f"{self.field}{sep}{suffix}", self.doc, key_line)

    # -- shapes ---------------------------------------------------------------------
    def value(self) -> Any:
        """The node as plain Python (what yaml.safe_load would give)."""
        ctor, node = self.doc.ctor, self.node
        try:
            # A plain scalar straight from its constructor: a big file has a million of them.
            make = ctor.yaml_constructors.get(node.tag) if isinstance(node, yaml.ScalarNode) else None
            return make(ctor, node) if make is not None else ctor.construct_document(node)
        except (yaml.YAMLError, ValueError, OverflowError) as e:   # 5,000 digits, 2024-13-45
            raise self.error(f"cannot read this value: {getattr(e, 'problem', None) or e}") from None

    def is_map(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def is_seq(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag.endswith(":null")

    def mapping(self, known: tuple[str, ...] | None = None, required: tuple[str, ...] = (),
                what: str = "mapping") -> dict[str, _Y]:
        """The node's keys -> children; unknown keys, duplicates and missing keys are errors."""
        if not self.is_map():
            raise self.error(f"expected a {what}, got {self._kind()}")
        seen: set[str] = set()
        merges = False
        for knode, _ in self.node.value:
            if knode.tag == _MERGE:
                merges = True
                continue
            key = self.key_of(knode)
            if key in seen:
                raise self.error("repeated key", field=self.child(knode, key).field,
                                 line=knode.start_mark.line + 1)
            seen.add(key)
        if merges:     # resolve `<<: *anchor`; keys written here then override the merged ones
            try:
                self.doc.ctor.flatten_mapping(self.node)
            except yaml.YAMLError as e:
                raise self.error(f"cannot merge: {getattr(e, 'problem', None) or e}") from None
        out: dict[str, _Y] = {}
        for knode, vnode in self.node.value:
            kline = knode.start_mark.line + 1
            key = self.key_of(knode)
            if known is not None and key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                also = f"; did you mean {hint[0]}?" if hint else f" (known: {', '.join(known)})"
                raise self.error(f"unknown key{also}", field=self.child(vnode, key).field, line=kline)
            out[key] = self.child(vnode, key, kline)
        for key in required:
            if key not in out:
                raise self.error(f"{key} is required", field=self.child(self.node, key).field,
                                 line=self.head_line)
        return out

    def key_of(self, knode: yaml.Node) -> str:
        """A mapping key, which must be a name (a list or a number as a key is refused)."""
        key = knode.value if knode.tag == _STR else _Y(knode, self.field, self.doc).value()
        if not isinstance(key, str):
            raise self.error(f"keys must be names, got {shown(key)}", line=knode.start_mark.line + 1)
        return key

    def seq(self, what: str = "list") -> list[_Y]:
        if not self.is_seq():
            raise self.error(f"expected a {what}, got {self._kind()}")
        return [self.child(n, f"[{i}]") for i, n in enumerate(self.node.value)]

    def _kind(self) -> str:
        if self.is_map():
            return "a mapping"
        if self.is_seq():
            return "a list"
        return shown(self.value())

    # -- scalars --------------------------------------------------------------------
    def str_(self, pattern: re.Pattern[str] | None = None, what: str = "a name") -> str:
        v = self.value()
        if not isinstance(v, str) or not v or (pattern is not None and not pattern.match(v)):
            raise self.error(f"expected {what}, got {shown(v)}")
        return v

    def choice(self, options: tuple[str, ...]) -> str:
        v = self.value()
        if v not in options:
            raise self.error(f"expected one of {', '.join(options)}, got {shown(v)}")
        return v

    def int_(self, low: int = 0, high: int | None = None) -> int:
        v = self.value()
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise self.error(f"expected a whole number {span}, got {shown(v)}")
        return v

    def bool_(self) -> bool:
        v = self.value()
        if not isinstance(v, bool):
            raise self.error(f"expected true or false, got {shown(v)}")
        return v

    def unit(self, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(self.value())
        except ValueError as e:
            raise self.error(str(e)) from None

    def duration(self) -> float:
        return self.unit(parse_duration)


# -- loading ------------------------------------------------------------------------

def load_scenario(path: str, known_checks: set[str] | None = None) -> Scenario:
    """Read a scenario file. Every mistake is a ConfigError with file, line and field."""
    return load_scenario_text(_read_text(path), path=path, known_checks=known_checks)


def read_yaml(path: str) -> Any:
    """Any YAML file as plain data (what ``yaml.safe_load`` gives), with the limits and the
    one-line errors of scenario files (a run directory's scenario.yaml is read with this)."""
    root = compose_yaml(_read_text(path), path)
    return None if root is None else _Y(root, "", _Doc(path)).value()


def _read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not a UTF-8 text file ({e.reason})", path=path,
                          line=data.count(b"\n", 0, e.start) + 1) from None


def load_scenario_text(text: str, path: str = "<string>",
                       known_checks: set[str] | None = None) -> Scenario:
    with _no_gc():
        root = compose_yaml(text, path)
        if root is None:
            raise ConfigError("the file is empty", path=path)
        return _Loader(_Y(root, "", _Doc(path)), known_checks).scenario()


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cycle collector paused while a file becomes a million small objects, none of them
    garbage yet: it would walk them all again and again (half the time of a 5 MB file)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compose_yaml(text: str, path: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (None for an empty document), each node with its line.
    Hostile input is a ConfigError naming file:line: nesting deeper than :data:`MAX_DEPTH`,
    a value that contains itself, aliases that expand past :data:`MAX_ALIASED` values."""
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"not valid YAML: {problem}", path=path,
                          line=mark.line + 1 if mark else None) from None
    except RecursionError:      # the pure-Python composer recurses once per level
        raise ConfigError(f"nested too deeply (at most {MAX_DEPTH} levels)", path=path) from None
    if root is not None:
        _check_shape(root, path)
    return root


def _check_shape(root: yaml.Node, path: str) -> None:
    """Refuse what would blow up later: too deep a tree, a cycle, a billion laughs. One pass
    over the lists and mappings, each distinct one once (an alias is the node it names, met
    again); a scalar counts one and is never walked (a bomb multiplies lists or mappings)."""
    expanded: dict[int, int] = {}        # id(node) -> values it stands for, aliases expanded
    aliased = 0
    open_: set[int] = set()              # nodes whose children are still being walked
    # (node, depth, None) to walk; (node, depth, (scalar children, other children)) once walked
    stack: list[tuple[yaml.Node, int, tuple[int, list[yaml.Node]] | None]] = [(root, 1, None)]
    while stack:
        node, depth, walked = stack.pop()
        key = id(node)
        if walked is not None:
            open_.discard(key)
            expanded[key] = 1 + walked[0] + sum(expanded[id(c)] for c in walked[1])
            continue
        if isinstance(node, yaml.ScalarNode):
            continue
        if key in expanded:              # met again: an alias repeats the whole value
            aliased += expanded[key]
            if aliased > MAX_ALIASED:
                raise ConfigError(f"aliases of the value anchored here expand the document by more "
                                  f"than {MAX_ALIASED:,} values (refused: a YAML bomb)",
                                  path=path, line=node.start_mark.line + 1)
            continue
        if key in open_:
            raise ConfigError("a value that contains itself (an alias inside its own anchor)",
                              path=path, line=node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            raise ConfigError(f"nested too deeply (at most {MAX_DEPTH} levels)", path=path,
                              line=node.start_mark.line + 1)
        items = node.value if isinstance(node, yaml.SequenceNode) else [
            part for pair in node.value for part in pair]
        inner = [c for c in items if not isinstance(c, yaml.ScalarNode)]
        if not inner:                    # most of a big file: a mapping of scalars
            expanded[key] = 1 + len(items)
            continue
        open_.add(key)
        stack.append((node, depth, (len(items) - len(inner), inner)))
        stack.extend((c, depth + 1, None) for c in inner)


def parse_fault(step: Mapping[str, Any], scenario: Scenario, where: str = "fault") -> FaultStep:
    """One ``faults:`` item given as data (``{"at": "0s", "crash": "leader"}``), checked exactly
    as the YAML loader checks it, against ``scenario``'s nodes; ConfigError names ``where``."""
    text = yaml.safe_dump(dict(step), default_flow_style=True)
    loader = _Loader(_Y(yaml.compose(text, Loader=_YAML_LOADER), "", _Doc(where)), None)
    loader.names = scenario.node_names
    loader.protocol_name = scenario.protocol
    try:
        return dataclasses.replace(loader.fault(loader.root), line=None)
    except ConfigError as e:      # the text is ours: its line means nothing to the caller
        raise ConfigError(e.message, path=where, field=e.field) from None


class _Loader:
    def __init__(self, root: _Y, known_checks: set[str] | None) -> None:
        self.root = root
        self.known_checks = known_checks
        self.names: list[str] = []
        self.protocol_name = ""
        self.workload_end = 0.0       # s; a fault step at or after it would never apply
        self.core: type[Core] = Core

    def scenario(self) -> Scenario:
        top = self.root.mapping(TOP_KEYS, required=("name", "protocol", "nodes"),
                                what="mapping of scenario keys (name, protocol, nodes, ...)")
        name = top["name"].str_(_SCENARIO_NAME, "a scenario name (letters, digits, . _ -)")
        # An optional key left empty (`faults:`) means the same as leaving it out.
        opt = {k: v for k, v in top.items() if not v.is_null()}
        if "description" in opt:
            opt["description"].str_(what="a text")
        if "source" in opt:
            opt["source"].str_(what="a file name")
        if "backend" in opt:
            opt["backend"].choice(BACKENDS)
        if "trace" in opt:
            opt["trace"].choice(LEVELS)
        protocol = self.protocol_name = self.protocol(top["protocol"])
        nodes = self.nodes(top["nodes"])
        self.names = [n.name for n in nodes]
        self.check_nodes(nodes, top["nodes"])
        config = self.config(opt.get("config"))
        checks, check_params = self.checks(opt["checks"]) if "checks" in opt else ([], {})
        scenario = Scenario(
            name=name, protocol=protocol, nodes=nodes, config=config,
            network=self.network(opt["network"]) if "network" in opt else NetworkSpec(),
            workload=self.workload(opt["workload"]) if "workload" in opt else WorkloadSpec(),
            faults=self.faults(opt["faults"]) if "faults" in opt else [],
            checks=checks, check_params=check_params,
            expect=self.expect(opt["expect"]) if "expect" in opt else {},
            seed=opt["seed"].int_(0, MAX_SEED) if "seed" in opt else None,
            settle=opt["settle"].duration() if "settle" in opt else Scenario.settle,
            source=self.root.doc.path, raw=self.root.value(),
        )
        if "workload" in opt:
            self.check_workload(scenario, opt["workload"])
        return scenario

    # -- protocol and nodes -----------------------------------------------------------
    def protocol(self, y: _Y) -> str:
        name = y.str_(what="a protocol name")
        if name not in protocols.names():
            raise y.error(f"unknown protocol {shown(name)} (known: {', '.join(protocols.names())})")
        try:
            self.core = protocols.get(name)
        except Exception as e:  # a protocol module that fails to import is the file's problem to report
            raise y.error(f"{name} cannot be loaded: {e}") from None
        return name

    def nodes(self, y: _Y) -> list[NodeSpec]:
        if y.is_map():
            raise y.error("expected a node count like 5 or a list of nodes")
        if not y.is_seq():
            n = y.int_(1, MAX_NODES)
            return [NodeSpec(f"n{i}") for i in range(1, n + 1)]
        items = y.seq("list of nodes")
        if not items:
            raise y.error("expected at least one node")
        out: list[NodeSpec] = []
        seen: set[str] = set()
        for item in items:
            spec = self.node_spec(item)
            if spec.name in seen:
                raise item.error(f"node {spec.name} is named twice")
            seen.add(spec.name)
            out.append(spec)
        if len(out) > MAX_NODES:
            raise y.error(f"at most {MAX_NODES} nodes")
        return out

    def check_nodes(self, nodes: list[NodeSpec], y: _Y) -> None:
        """The protocol's own word on its nodes (2PC: one coordinator, known roles)."""
        try:
            self.core.check_nodes({n.name: n.as_dict() for n in nodes})
        except NodesError as e:
            at = y.seq()[self.names.index(e.node)] if e.node in self.names and y.is_seq() else y
            raise at.error(str(e), line=None if at is not y else y.head_line) from None

    def node_spec(self, y: _Y) -> NodeSpec:
        if not y.is_map():
            return NodeSpec(self.node_name(y))
        m = y.mapping(required=("name",))
        role = region = None
        if "role" in m and not m["role"].is_null():
            role = self.role(m["role"])
        if "region" in m and not m["region"].is_null():
            region = m["region"].str_(what="a region name")
        attrs = {k: v.value() for k, v in m.items() if k not in ("name", "role", "region")}
        if "byzantine" in m:
            attrs["byzantine"] = self.byzantine(m["byzantine"])
        return NodeSpec(self.node_name(m["name"]), role=role, region=region, attrs=attrs)

    def byzantine(self, y: _Y) -> list[str]:
        """A node's Byzantine behaviours: names the protocol's core lists (``zlab protocols``)."""
        known = protocols.get(self.protocol_name).behaviours
        if not known:
            raise y.error(f"{self.protocol_name} has no Byzantine behaviours "
                          "(a node may be byzantine only under a protocol that models them)")
        items = y.seq("list of behaviours") if y.is_seq() else [y]
        out: list[str] = []
        for item in items:
            name = item.str_(what="a behaviour name")
            if name not in known:
                hint = difflib.get_close_matches(name, sorted(known), n=1)
                also = f"; did you mean {hint[0]}?" if hint else ""
                raise item.error(f"{self.protocol_name} has no behaviour {shown(name)} "
                                 f"(known: {', '.join(sorted(known))}){also}")
            if name not in out:
                out.append(name)
        return out

    def role(self, y: _Y) -> str | tuple[str, ...]:
        """A node's ``role``: one name, or a list of names (Paxos's proposer, acceptor, learner)."""
        if not y.is_seq():
            return y.str_(what="a role name or a list of them")
        items = y.seq("list of role names")
        if not items:
            raise y.error("expected a role name or a non-empty list of them")
        names: list[str] = []
        for item in items:
            name = item.str_(what="a role name")
            if name in names:
                raise item.error(f"role {name} is listed twice")
            names.append(name)
        return tuple(names)

    def node_name(self, y: _Y) -> str:
        name = y.str_(_NODE_NAME, "a node name (a letter, then letters, digits, _ or -)")
        if name in RESERVED_NAMES:
            raise y.error(f"{name!r} is reserved (a fault target or the orchestrator); "
                          "pick another node name")
        return name

    def config(self, y: _Y | None) -> dict[str, Any]:
        keys = y.mapping() if y is not None else {}
        raw = {k: v.value() for k, v in keys.items()}
        try:
            build_config(self.core, raw)
        except ConfigValueError as e:
            at = keys.get(e.field)
            line = at.line if at else (y.head_line if y else None)
            raise self.root.error(e.message, field=f"config.{e.field}", line=line) from None
        return raw

    # -- network -------------------------------------------------------------------------
    def link_changes(self, m: dict[str, _Y], keys: tuple[str, ...] = tuple(_LINK_KEYS)) -> dict[str, Any]:
        """The LinkParams fields set in mapping ``m``, converted to seconds, fractions, bit/s."""
        return {key: m[key].unit(_LINK_KEYS[key]) for key in keys if key in m}

    def network(self, y: _Y) -> NetworkSpec:
        m = y.mapping((*_LINK_KEYS, "links"))
        default = LinkParams().merged(**self.link_changes(m))
        rules: dict[tuple[str, str], LinkParams] = {}
        for item in m["links"].seq("list of links") if "links" in m else []:
            lm = item.mapping(("from", "to", "oneway", *_LINK_KEYS), required=("from", "to"))
            changes = self.link_changes(lm)
            if not changes:
                raise item.error(f"a link sets at least one of {', '.join(_LINK_KEYS)}")
            srcs, dsts = self.link_names(lm["from"]), self.link_names(lm["to"])
            oneway = lm["oneway"].bool_() if "oneway" in lm else False
            pairs = [(a, b) for a in srcs for b in dsts if a != b]
            if not oneway:
                pairs += [(b, a) for a, b in pairs]
            if not pairs:
                raise item.error("this link joins a node only to itself")
            for pair in pairs:
                # Later links layer over earlier ones for the same pair; one rule per pair.
                rules[pair] = rules.get(pair, default).merged(**changes)
        return NetworkSpec(default=default,
                           links=tuple(LinkRule(a, b, p) for (a, b), p in rules.items()))

    def link_names(self, y: _Y) -> list[str]:
        items = y.seq() if y.is_seq() else [y]
        out: list[str] = []
        for item in items:
            name = item.str_(what="a node name or all")
            if name == "all":
                out += self.names
            elif name in self.names:
                out.append(name)
            else:
                raise item.error(f"no node named {shown(name)} (nodes: {', '.join(self.names)})")
        return out

    # -- workload ------------------------------------------------------------------------
    def workload(self, y: _Y) -> WorkloadSpec:
        m = y.mapping()
        if "kind" not in m:
            raise y.error(f"kind is required ({', '.join(workload_kinds())})",
                          field=y.child(y.node, "kind").field, line=y.head_line)
        kind = m["kind"].choice(workload_kinds())
        from lab.workloads import unknown_key
        from lab.workloads.registry import workload_class
        cls = workload_class(kind)
        own = cls.params if cls is not None else ()
        for key, v in m.items():
            if key not in WORKLOAD_KEYS and key not in own:
                raise v.error(unknown_key(key, kind, own), line=v.key_line)
        spec = WorkloadSpec(
            kind=kind,
            clients=m["clients"].int_(1, 10_000) if "clients" in m else 1,
            rate=m["rate"].unit(parse_rate) if "rate" in m else None,
            concurrency=m["concurrency"].int_(1, 10_000) if "concurrency" in m else None,
            duration=m["duration"].duration() if "duration" in m else 0.0,
            timeout=m["timeout"].duration() if "timeout" in m else WorkloadSpec.timeout,
            params={k: v.value() for k, v in m.items() if k not in WORKLOAD_KEYS},
        )
        if spec.rate is not None and spec.rate > MAX_RATE:
            raise m["rate"].error(f"at most {MAX_RATE}/s")
        if spec.rate is not None and spec.concurrency is not None:
            raise m["concurrency"].error("set rate (open loop) or concurrency (closed loop), not both")
        if kind != "none" and spec.duration <= 0:
            raise y.error(f"a {kind} workload needs a duration like 10s",
                          field=y.child(y.node, "duration").field, line=y.head_line)
        if spec.timeout <= 0:
            raise m["timeout"].error("must be above 0s")
        self.workload_end = spec.duration
        return spec

    def check_workload(self, scenario: Scenario, y: _Y) -> None:
        """The workload's own checks of its keys' values, now rather than when the run starts;
        its error names a ``workload.<key>`` field, which gets that key's line."""
        from lab.workloads.registry import workload_for
        try:
            workload_for(scenario.workload, scenario, Random(0))
        except ConfigError as e:
            keys = y.mapping()
            at = keys.get((e.field or "").removeprefix("workload."))
            raise ConfigError(e.message, path=e.path, field=e.field,
                              line=at.key_line if at else y.head_line) from None

    # -- faults ----------------------------------------------------------------------------
    def faults(self, y: _Y) -> list[FaultStep]:
        steps = [self.fault(item) for item in y.seq("list of faults")]
        return sorted(steps, key=lambda s: s.at)     # stable: same-time steps keep file order

    def fault(self, y: _Y) -> FaultStep:
        m = y.mapping(("at", "for", "oneway", *FAULT_ACTIONS), required=("at",),
                      what="mapping like {at: 5s, crash: leader}")
        actions = [k for k in m if k in FAULT_ACTIONS]
        if len(actions) != 1:
            found = ", ".join(actions) or "none"
            raise y.error(f"a fault has exactly one action of {', '.join(FAULT_ACTIONS)} "
                          f"(found: {found})")
        action = actions[0]
        at = m["at"].duration()
        if self.workload_end and at >= self.workload_end:
            raise m["at"].error(f"{format_duration(at)} is at or after the end of the workload "
                                f"({format_duration(self.workload_end)}): this step would never apply")
        duration = None
        if "for" in m:
            if action not in REVERTIBLE:
                raise m["for"].error(f"{action} cannot be reverted; for: applies to "
                                     f"{', '.join(REVERTIBLE)}")
            duration = m["for"].duration()
            if duration <= 0:
                raise m["for"].error("must be above 0s")
        oneway = False
        if "oneway" in m:
            if action not in ONEWAY_ACTIONS:
                raise m["oneway"].error(f"oneway applies to {', '.join(ONEWAY_ACTIONS)}, not {action}")
            oneway = m["oneway"].bool_()
        v = m[action]
        if action == "partition":
            args: Any = self.partition(v)
        elif action == "heal":
            args = v.choice(HEAL_WHAT)
        elif action in NODE_ACTIONS:
            args = self.target(v)
        else:
            args = self.link_fault(action, v)
        return FaultStep(at=at, action=action, args=args, oneway=oneway, duration=duration,
                         line=y.line)

    def target(self, y: _Y, *, allow_list: bool = True, rest: bool = False) -> str | list[str]:
        """A node name, a symbol (leader, minority, ...) or a list of them; kept as written.
        ``rest`` only where the step has other targets to leave out (``rest=True``)."""
        if y.is_seq() and allow_list:
            items = y.seq()
            if not items:
                raise y.error("expected at least one target")
            return [self.target(i, allow_list=False) for i in items]  # type: ignore[misc]
        name = y.str_(what=f"a node name or one of {', '.join(TARGET_SYMBOLS)}")
        if name not in self.names and name not in TARGET_SYMBOLS:
            raise y.error(f"no node or target named {shown(name)} (nodes: {', '.join(self.names)}; "
                          f"targets: {', '.join(TARGET_SYMBOLS)})")
        if name == TARGET_REST and not rest:
            raise y.error(REST_USE)
        return name

    def partition(self, y: _Y) -> str | list[str | list[str]]:
        if not y.is_seq():
            return self.target(y, allow_list=False)          # one group against the rest
        groups = y.seq("list of groups")
        if not groups:
            raise y.error("expected groups like [[n1, n2], [n3, n4, n5]] or [minority, majority]")
        out = [self.target(g, rest=True) for g in groups]
        if out.count(TARGET_REST) > 1:
            raise y.error("a partition has at most one rest group")
        return out

    def link_fault(self, action: str, y: _Y) -> dict[str, Any]:
        """Args of a link fault: ``{from, to} | {nodes}`` plus LinkParams fields, in SI units."""
        if not y.is_map():
            # Shorthand: `loss: 5%` shapes every link.
            return {"from": "all", "to": "all", action: y.unit(_LINK_KEYS[action])}
        keys = _LINK_FAULT_KEYS[action]
        m = y.mapping(("from", "to", "nodes", *keys))
        if "nodes" in m and ("from" in m or "to" in m):
            raise m["nodes"].error("use nodes (every link in or out) or from/to, not both")
        if "value" in m:
            out = {action: m["value"].unit(_LINK_KEYS[action])}
        else:
            out = self.link_changes(m, keys)
        if not out:
            raise y.error(f"{action} needs {' or '.join(keys)}")
        where = {"nodes": self.target(m["nodes"])} if "nodes" in m else {
            "from": self.target(m["from"], rest=True) if "from" in m else "all",
            "to": self.target(m["to"], rest=True) if "to" in m else "all"}
        if where.get("from") == where.get("to") == TARGET_REST:
            raise m["to"].error("from and to cannot both be rest")
        return {**where, **out}

    # -- checks --------------------------------------------------------------------------
    def applicable_checks(self) -> set[str]:
        """What a check name may be: the ``known_checks`` given, else every registered check
        that means something for this protocol (its defaults and optional checks)."""
        if self.known_checks is not None:
            return set(self.known_checks)
        from lab.checks.registry import all_checks
        registered = all_checks(self.protocol_name)
        return {c for c in protocols.get(self.protocol_name).applicable_checks() if c in registered}

    def check_name(self, y: _Y, name: str | None = None) -> str:
        name = name if name is not None else y.str_(what="a check name")
        known = self.applicable_checks()
        if name not in known:
            from lab.checks.registry import all_checks
            listed = ", ".join(sorted(known)) or "none"
            if self.known_checks is None and name in all_checks():
                raise y.error(f"check {name!r} does not apply to {self.protocol_name} "
                              f"(its checks: {listed})")
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            also = f"; did you mean {hint[0]}?" if hint else ""
            raise y.error(f"unknown check {shown(name)} (known: {listed}){also}")
        return name

    def checks(self, y: _Y) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Names in order, and the parameters of those given as ``{name: x, param: value}``."""
        from lab.checks.registry import convert_params
        out: list[str] = []
        params: dict[str, dict[str, Any]] = {}
        for item in y.seq("list of check names"):
            if item.is_map():
                m = item.mapping(required=("name",), what="check: a name or {name: ..., parameter: ...}")
                name = self.check_name(m["name"])
                for key, value in m.items():
                    if key == "name":
                        continue
                    try:
                        params.setdefault(name, {}).update(
                            convert_params(name, {key: value.value()}, protocol=self.protocol_name))
                    except ValueError as e:
                        raise value.error(str(e).split(": ", 1)[1], field=f"{item.field}.{key}",
                                          line=value.key_line) from None
            else:
                name = self.check_name(item)
            if name in out:
                raise item.error(f"check {name} is listed twice")
            out.append(name)
        return out, params

    def expect(self, y: _Y) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, v in y.mapping().items():
            self.check_name(v, key)     # a check named only here runs too (lab/runner.py)
            out[key] = v.choice(VERDICTS)
        return out


# -- writing back -----------------------------------------------------------------------

def _reads_back(text: str, parse: Callable[[str], Any], value: Any) -> bool:
    try:
        return parse(text) == value
    except ValueError:
        return False


def _plain_decimal(x: float) -> str:
    """``repr`` without exponent notation, which parse_duration does not read."""
    s = repr(x)
    return format(Decimal(x), "f") if "e" in s else s


def duration_text(seconds: float) -> str:
    """``0.15`` -> ``"150ms"``: a form parse_duration reads back to the very same float."""
    for text in (format_duration(seconds), f"{_plain_decimal(seconds * 1000)}ms",
                 f"{_plain_decimal(seconds)}s"):
        if _reads_back(text, parse_duration, seconds):
            return text
    return f"{format(Decimal(seconds), 'f')}s"   # the float's exact expansion: always reads back


def percent_text(fraction: float) -> str:
    """``0.05`` -> ``"5%"``; exact for every value parse_percent gives."""
    guess = fraction * 100
    near, up, down = [guess], guess, guess
    for _ in range(3):      # x/100 can land an ulp or two away from the x that was written
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        near += [up, down]
    for text in [f"{guess:g}%", *(f"{x!r}%" for x in near)]:
        if _reads_back(text, parse_percent, fraction):
            return text
    return f"{guess!r}%"


def bitrate_text(bits: int) -> str:
    """``1_000_000`` -> ``"1mbit"``."""
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= scale and bits % scale == 0:
            return f"{bits // scale}{unit}"
    return f"{bits}bit"


def rate_text(per_second: float) -> str:
    """``100.0`` -> ``"100/s"``."""
    text = f"{per_second:g}/s"
    return text if _reads_back(text, parse_rate, per_second) else f"{per_second!r}/s"


def _link_text(key: str, value: Any) -> Any:
    """One LinkParams field as YAML writes it."""
    if key in ("delay", "jitter"):
        return duration_text(value)
    if key == "rate":
        return bitrate_text(value)
    if key == "distribution":
        return value
    return percent_text(value)


def _link_dict(p: LinkParams, base: LinkParams) -> dict[str, Any]:
    """The fields of ``p`` that differ from ``base``, in YAML units."""
    return {k: _link_text(k, getattr(p, k)) for k in _LINK_KEYS
            if getattr(p, k) != getattr(base, k) and getattr(p, k) is not None}


def _fault_dict(step: FaultStep) -> dict[str, Any]:
    out: dict[str, Any] = {"at": duration_text(step.at)}
    args = step.args
    if step.action in LINK_ACTIONS:
        args = {}
        for key, value in step.args.items():
            if key in ("from", "to", "nodes"):
                args[key] = value
            elif key == step.action and "value" in _LINK_FAULT_KEYS[key]:
                args["value"] = _link_text(key, value)
            else:
                args[key] = _link_text(key, value)
    out[step.action] = args
    if step.duration is not None:
        out["for"] = duration_text(step.duration)
    if step.oneway:
        out["oneway"] = True
    return out


def _param_text(protocol: str, check: str, key: str, value: Any) -> Any:
    """A check parameter as YAML writes it, in its declared unit."""
    from lab.checks.registry import all_params
    unit = all_params(protocol).get(check, {}).get(key, ("", ""))[0]
    if unit == "s":
        return duration_text(value)
    if unit == "%":
        return percent_text(value)
    return value


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    """The resolved scenario as YAML-ready data (explicit units); loads back to an equal Scenario."""
    plain = all(n == NodeSpec(f"n{i}") for i, n in enumerate(s.nodes, 1))
    nodes: Any = len(s.nodes) if plain and s.nodes else [
        {k: v for k, v in n.as_dict().items() if v is not None} for n in s.nodes]
    out: dict[str, Any] = {"name": s.name}
    if isinstance(s.raw, dict) and isinstance(s.raw.get("description"), str):
        out["description"] = s.raw["description"]
    out.update({"protocol": s.protocol, "nodes": nodes, "config": dict(s.config)})
    network: dict[str, Any] = _link_dict(s.network.default, LinkParams())
    if s.network.links:
        # One directed rule per pair, each complete: a link equal to the default still says its delay.
        network["links"] = [{"from": r.src, "to": r.dst, "oneway": True,
                             **(_link_dict(r.params, s.network.default)
                                or {"delay": duration_text(r.params.delay)})}
                            for r in s.network.links]
    out["network"] = network
    w = s.workload
    workload: dict[str, Any] = {"kind": w.kind, "clients": w.clients}
    if w.rate is not None:
        workload["rate"] = rate_text(w.rate)
    if w.concurrency is not None:
        workload["concurrency"] = w.concurrency
    workload.update({"duration": duration_text(w.duration), "timeout": duration_text(w.timeout),
                     **w.params})
    out["workload"] = workload
    out["faults"] = [_fault_dict(f) for f in s.faults]
    out["checks"] = [{"name": c, **{k: _param_text(s.protocol, c, k, v)
                                      for k, v in s.check_params[c].items()}}
                     if s.check_params.get(c) else c for c in s.checks]
    out["expect"] = dict(s.expect)
    if s.seed is not None:
        out["seed"] = s.seed
    out["settle"] = duration_text(s.settle)
    return out
