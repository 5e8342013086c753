"""Kernel network-fault commands, as argument lists (Blockade style).

Nothing here runs a command: every function returns ``argv`` lists that a
backend hands to an injected executor (``docker exec`` into the node's own
network namespace). That keeps the exact commands testable without a kernel.

What zlab owns inside one node's namespace, on its lab interface (``eth0``):

* **Shaping** (egress, so a directed link src -> dst is shaped in src):
  one root ``htb`` qdisc, handle ``1:``, ``default 1``; class ``1:1`` carries
  every unclassified packet unshaped (leaf ``2:``, a pfifo). Minors
  ``0x2``-``0xf`` are reserved.
  Each shaped peer gets class ``1:<minor>`` (minor ``0x10`` + peer index,
  written in hex as tc reads it), a u32 filter on the peer's address with
  the fixed handle ``800::<minor>`` (so ``filter replace`` is idempotent),
  and a leaf qdisc ``<minor>:`` -- ``netem`` for delay/jitter/loss/
  duplicate/reorder (plus netem's own ``rate``), or ``tbf`` for a rate limit
  alone (and for every rate limit where the kernel has no netem).
* **Partitions**: one iptables chain named for the lab (``ZLAB-<hash>``),
  jumped to from INPUT and OUTPUT, holding DROP rules by peer address.

State, not deltas: :func:`plan` takes the state zlab installed and the state
wanted, and returns the commands between them; planning a state against
itself gives no command, and :func:`teardown` removes everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lab.scenario import LinkParams

Argv = list[str]

DEV = "eth0"
ROOT = "1:"
DEFAULT_MINOR = 0x1          # class for unclassified traffic: unshaped
DEFAULT_LEAF = "2:"          # its explicit pfifo (a container's veth has txqueuelen 0, and a
DEFAULT_QLEN = "1000"        # default fifo sized from that would hold almost nothing)
FIRST_PEER_MINOR = 0x10      # 0x2..0xf are reserved for zlab's later use
MAX_PEERS = 0xFFFF - FIRST_PEER_MINOR
UNSHAPED = "10gbit"          # an htb class must have a rate: one no lab link reaches
# htb derives quantum from rate/r2q; at 10gbit the default (r2q 10) is far above the
# kernel's 200000-byte cap and it warns on every class. A fixed quantum silences that.
QUANTUM = "60000"
HTB_BURST = "64k"
TBF_LATENCY = "200ms"        # how long a packet may queue in tbf before it is dropped
TBF_MIN_BURST = 32768        # bytes: at least a few full-size (GSO) packets
IPT = ["iptables", "-w"]     # -w: wait for the xtables lock instead of failing

# LinkParams.distribution -> netem's jitter table. netem's default is uniform and it has
# no exponential table: pareto is the heavy-tailed one it ships.
NETEM_DISTRIBUTION = {"uniform": None, "constant": None, "exponential": "pareto",
                      "normal": "normal", "pareto": "pareto", "paretonormal": "paretonormal"}
# netem reorders by sending some packets *undelayed*: without a delay nothing is reordered.
REORDER_MIN_DELAY = 0.010


def chain_name(lab: str) -> str:
    """The lab's iptables chain: short (iptables allows 28 chars) and stable per lab name."""
    return "ZLAB-" + hashlib.blake2b(lab.encode(), digest_size=4).hexdigest().upper()


# -- value formatting ------------------------------------------------------------

def tc_time(seconds: float) -> str:
    """Seconds -> tc time: whole milliseconds as ``80ms``, finer as ``1500us``."""
    us = round(seconds * 1_000_000)
    return f"{us // 1000}ms" if us % 1000 == 0 else f"{us}us"


def tc_percent(fraction: float) -> str:
    return f"{round(fraction * 100, 4):g}%"


def tc_rate(bits_per_second: int) -> str:
    return f"{int(bits_per_second)}bit"


def handle(minor: int) -> str:
    """The class id of a peer's class, ``1:10`` for minor 0x10 (tc reads hex)."""
    return f"1:{minor:x}"


def leaf_handle(minor: int) -> str:
    return f"{minor:x}:"


# -- which part of a link the kernel makes ---------------------------------------

def netem_part(params: LinkParams) -> LinkParams:
    """The part of ``params`` only netem can make (all but rate)."""
    return LinkParams(delay=params.delay, jitter=params.jitter, distribution=params.distribution,
                      loss=params.loss, duplicate=params.duplicate, reorder=params.reorder)


def split_params(params: LinkParams, netem: bool) -> tuple[LinkParams, LinkParams]:
    """(kernel part, agent-shim part) of a link. Without netem the shim makes delay,
    jitter, loss, duplicate and reorder; the rate limit is always the kernel's (tbf)."""
    if netem:
        return params, LinkParams()
    return LinkParams(rate=params.rate), netem_part(params)


def leaf_kind(params: LinkParams) -> str | None:
    """``netem``, ``tbf`` or None (a perfect link needs no leaf, nor class)."""
    if netem_part(params) != LinkParams():
        return "netem"
    if params.rate is not None:
        return "tbf"
    return None


# -- tc builders -----------------------------------------------------------------

def tc_root(dev: str = DEV) -> list[Argv]:
    """zlab's htb root and its unshaped default class, with an explicit fifo."""
    return [
        ["tc", "qdisc", "replace", "dev", dev, "root", "handle", ROOT, "htb",
         "default", f"{DEFAULT_MINOR:x}"],
        ["tc", "class", "replace", "dev", dev, "parent", ROOT, "classid", handle(DEFAULT_MINOR),
         "htb", "rate", UNSHAPED, "ceil", UNSHAPED, "quantum", QUANTUM,
         "burst", HTB_BURST, "cburst", HTB_BURST],
        ["tc", "qdisc", "replace", "dev", dev, "parent", handle(DEFAULT_MINOR), "handle", DEFAULT_LEAF,
         "pfifo", "limit", DEFAULT_QLEN],
    ]


def tc_peer_class(minor: int, dev: str = DEV) -> Argv:
    """A peer's class: unshaped itself; its leaf qdisc (always one) does the shaping."""
    return ["tc", "class", "replace", "dev", dev, "parent", ROOT, "classid", handle(minor),
            "htb", "rate", UNSHAPED, "ceil", UNSHAPED, "quantum", QUANTUM,
            "burst", HTB_BURST, "cburst", HTB_BURST]


def tc_peer_filter(minor: int, peer_ip: str, dev: str = DEV) -> Argv:
    """Steer packets to ``peer_ip`` into the peer's class (fixed handle: replace is idempotent)."""
    return ["tc", "filter", "replace", "dev", dev, "parent", ROOT, "protocol", "ip", "prio", "1",
            "handle", f"800::{minor:x}", "u32", "match", "ip", "dst", f"{peer_ip}/32",
            "flowid", handle(minor)]


def tc_peer_filter_del(minor: int, dev: str = DEV) -> Argv:
    return ["tc", "filter", "del", "dev", dev, "parent", ROOT, "protocol", "ip", "prio", "1",
            "handle", f"800::{minor:x}", "u32"]


def tc_peer_class_del(minor: int, dev: str = DEV) -> Argv:
    """Delete a peer's class (its leaf qdisc goes with it). Delete its filter first."""
    return ["tc", "class", "del", "dev", dev, "classid", handle(minor)]


def netem_args(params: LinkParams) -> Argv:
    """netem's options for a link: delay [jitter [distribution]], loss, duplicate, reorder, rate."""
    delay = params.delay
    if params.reorder > 0 and delay <= 0:
        delay = REORDER_MIN_DELAY
    args: Argv = []
    if delay > 0 or params.jitter > 0:
        args += ["delay", tc_time(delay)]
        dist = NETEM_DISTRIBUTION.get(params.distribution, params.distribution)
        if params.jitter > 0 and params.distribution != "constant":
            args.append(tc_time(params.jitter))
            if dist:
                args += ["distribution", dist]
    if params.loss > 0:
        args += ["loss", tc_percent(params.loss)]
    if params.duplicate > 0:
        args += ["duplicate", tc_percent(params.duplicate)]
    if params.reorder > 0:
        args += ["reorder", tc_percent(params.reorder)]
    if params.rate is not None:
        args += ["rate", tc_rate(params.rate)]
    return args


def tbf_args(rate: int) -> Argv:
    """tbf for ``rate`` bit/s; the burst is 20 ms worth of the rate, at least TBF_MIN_BURST bytes."""
    burst = max(TBF_MIN_BURST, int(rate / 8 / 50))
    return ["rate", tc_rate(rate), "burst", str(burst), "latency", TBF_LATENCY]


def tc_leaf(minor: int, params: LinkParams, dev: str = DEV, verb: str = "replace") -> Argv:
    """The leaf qdisc that shapes one peer's class (``verb`` add or replace)."""
    kind = leaf_kind(params)
    if kind is None:
        raise ValueError("a perfect link has no leaf qdisc")
    args = netem_args(params) if kind == "netem" else tbf_args(params.rate or 0)
    return ["tc", "qdisc", verb, "dev", dev, "parent", handle(minor), "handle", leaf_handle(minor),
            kind, *args]


def tc_leaf_del(minor: int, dev: str = DEV) -> Argv:
    return ["tc", "qdisc", "del", "dev", dev, "parent", handle(minor), "handle", leaf_handle(minor)]


def tc_teardown(dev: str = DEV) -> Argv:
    """Remove zlab's root qdisc: every class, filter and leaf goes with it."""
    return ["tc", "qdisc", "del", "dev", dev, "root"]


# -- iptables builders -----------------------------------------------------------

@dataclass(frozen=True, order=True)
class Drop:
    """Drop packets between this node and ``peer_ip``.

    ``direction`` ``out``: this node's packets to the peer (matched with
    ``-d``, so only in OUTPUT); ``in``: the peer's packets to this node
    (``-s``, only in INPUT). ``port`` narrows the rule to TCP packets *to* that
    port: the peer's listening port for ``out``, this node's for ``in``. Then
    only the connection that carries messages in the cut direction is hit,
    not the ACKs of the connection the other way, so a one-way cut stays
    one-way over TCP.
    """

    peer_ip: str
    direction: str = "out"
    port: int | None = None


def ipt_rule(drop: Drop) -> Argv:
    """The rule spec (no chain, no verb) for one Drop."""
    if drop.direction == "out":
        spec = ["-d", f"{drop.peer_ip}/32"]
    elif drop.direction == "in":
        spec = ["-s", f"{drop.peer_ip}/32"]
    else:
        raise ValueError(f"direction must be 'in' or 'out', not {drop.direction!r}")
    if drop.port is not None:
        spec += ["-p", "tcp", "--dport", str(drop.port)]
    return spec + ["-j", "DROP"]


def ipt_chain_create(chain: str) -> list[Argv]:
    """Create the lab's chain and jump to it first from INPUT and OUTPUT."""
    return [IPT + ["-N", chain],
            IPT + ["-I", "INPUT", "1", "-j", chain],
            IPT + ["-I", "OUTPUT", "1", "-j", chain]]


def ipt_add(chain: str, drop: Drop) -> Argv:
    return IPT + ["-A", chain, *ipt_rule(drop)]


def ipt_del(chain: str, drop: Drop) -> Argv:
    return IPT + ["-D", chain, *ipt_rule(drop)]


def ipt_flush(chain: str) -> Argv:
    return IPT + ["-F", chain]


def ipt_teardown(chain: str) -> list[Argv]:
    """Unhook, flush and delete the lab's chain."""
    return [IPT + ["-D", "INPUT", "-j", chain],
            IPT + ["-D", "OUTPUT", "-j", chain],
            ipt_flush(chain),
            IPT + ["-X", chain]]


# -- probes ----------------------------------------------------------------------

PROBE_CHAIN = "ZLAB-PROBE"


def probe_commands(dev: str = DEV) -> dict[str, list[Argv]]:
    """Per capability, commands that all succeed only where it works. Run them in a
    node's namespace before zlab shapes anything there: each leaves nothing behind.
    (Kernel modules are per host, so one node answers for the whole lab.)"""
    def qdisc(kind: str, *args: str) -> list[Argv]:
        return [["tc", "qdisc", "replace", "dev", dev, "root", "handle", "ffff:", kind, *args],
                ["tc", "qdisc", "del", "dev", dev, "root"]]
    return {
        "netem": qdisc("netem", "delay", "1ms"),
        "htb": qdisc("htb", "default", "1"),
        "tbf": qdisc("tbf", *tbf_args(1_000_000)),
        "iptables": [IPT + ["-N", PROBE_CHAIN], IPT + ["-X", PROBE_CHAIN]],
    }


def probe_cleanup(dev: str = DEV) -> list[Argv]:
    """Best-effort undo of a probe that failed half-way (errors are expected and ignored)."""
    return [["tc", "qdisc", "del", "dev", dev, "root"], IPT + ["-X", PROBE_CHAIN]]


@dataclass(frozen=True)
class Caps:
    """What the kernel offers, from :func:`probe_commands`."""

    netem: bool = False
    htb: bool = False
    tbf: bool = False
    iptables: bool = False

    @property
    def shaping(self) -> bool:
        """Per-peer shaping needs the htb root and u32 filters; tbf makes rate limits."""
        return self.htb and self.tbf


# -- the planner -----------------------------------------------------------------

@dataclass(frozen=True)
class NetState:
    """What zlab has installed (or wants installed) in one node's namespace.

    ``links``: peer address -> the *kernel* part of the link to it (perfect
    links are left out); ``drops``: the DROP rules in the lab's chain;
    ``chain``: whether the chain exists (it stays once made, until teardown).
    """

    links: Mapping[str, LinkParams] = field(default_factory=dict)
    drops: frozenset[Drop] = frozenset()
    chain: bool = False

    def normalized(self) -> NetState:
        links = {ip: p for ip, p in self.links.items() if leaf_kind(p) is not None}
        return NetState(links=links, drops=frozenset(self.drops), chain=self.chain or bool(self.drops))


@dataclass(frozen=True)
class NetConfig:
    """The fixed facts a plan needs: interface, chain, and each peer's class minor."""

    chain: str
    minors: Mapping[str, int]            # peer address -> class minor
    dev: str = DEV

    @staticmethod
    def for_peers(lab: str, peer_ips: Iterable[str], dev: str = DEV) -> NetConfig:
        """Minors by the peers' order (give every node of a lab the same, stable order)."""
        ips = list(peer_ips)
        if len(ips) > MAX_PEERS:
            raise ValueError(f"at most {MAX_PEERS} peers can be shaped")
        return NetConfig(chain=chain_name(lab), dev=dev,
                         minors={ip: FIRST_PEER_MINOR + i for i, ip in enumerate(ips)})

    def minor(self, ip: str) -> int:
        try:
            return self.minors[ip]
        except KeyError:
            raise ValueError(f"{ip} is not a peer of this lab") from None


def plan(cfg: NetConfig, current: NetState, desired: NetState) -> tuple[list[Argv], NetState]:
    """Commands that take a namespace from ``current`` to ``desired``, and the state after.

    Idempotent: ``plan(cfg, s, s)`` is empty, and planning again from the
    returned state to the same ``desired`` is empty too.
    """
    cur, want = current.normalized(), desired.normalized()
    cmds: list[Argv] = []
    cmds += _plan_tc(cfg, cur.links, want.links)
    chain = cur.chain or want.chain
    if want.drops and not cur.chain:
        cmds += ipt_chain_create(cfg.chain)
    for drop in sorted(cur.drops - want.drops):
        cmds.append(ipt_del(cfg.chain, drop))
    for drop in sorted(want.drops - cur.drops):
        cmds.append(ipt_add(cfg.chain, drop))
    return cmds, NetState(links=dict(want.links), drops=want.drops, chain=chain)


def _plan_tc(cfg: NetConfig, cur: Mapping[str, LinkParams], want: Mapping[str, LinkParams]) -> list[Argv]:
    if not want:
        return [tc_teardown(cfg.dev)] if cur else []
    cmds: list[Argv] = []
    if not cur:
        cmds += tc_root(cfg.dev)
    for ip in sorted(set(cur) - set(want), key=cfg.minor):
        minor = cfg.minor(ip)
        cmds += [tc_peer_filter_del(minor, cfg.dev), tc_peer_class_del(minor, cfg.dev)]
    for ip in sorted(want, key=cfg.minor):
        minor, new, old = cfg.minor(ip), want[ip], cur.get(ip)
        if new == old:
            continue
        if old is None:
            cmds += [tc_peer_class(minor, cfg.dev), tc_leaf(minor, new, cfg.dev, "add"),
                     tc_peer_filter(minor, ip, cfg.dev)]
        elif leaf_kind(old) == leaf_kind(new):
            cmds.append(tc_leaf(minor, new, cfg.dev, "replace"))
        else:
            # tc cannot change a qdisc's kind in place: delete, then add.
            cmds += [tc_leaf_del(minor, cfg.dev), tc_leaf(minor, new, cfg.dev, "add")]
    return cmds


def teardown(cfg: NetConfig, current: NetState) -> list[Argv]:
    """Everything zlab installed in this namespace, removed."""
    cur = current.normalized()
    cmds: list[Argv] = [tc_teardown(cfg.dev)] if cur.links else []
    if cur.chain:
        cmds += ipt_teardown(cfg.chain)
    return cmds


def mechanism(params: LinkParams, caps: Caps) -> str:
    """How a link's settings are made, for the trace and the report."""
    kernel, shim = split_params(params, caps.netem)
    parts = []
    kind = leaf_kind(kernel)
    if kind:
        parts.append(kind)
    if shim != LinkParams():
        parts.append("shim")
    # A perfect link: name what undoes the fault (the kernel's netem, or the shim).
    return "+".join(parts) or ("netem" if caps.netem else "shim")
