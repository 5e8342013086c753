"""Protocol cores, by name. Nothing here imports zmq, sockets, threads, clocks or randomness."""

from __future__ import annotations

from nodes.loader import load
from nodes.protocols.core import Core
from nodes.units import shown

# name -> "module:Class"; imported lazily so a broken protocol does not break the others.
_REGISTRY = {
    "register": "nodes.protocols.register:Register",
    "pbft": "nodes.protocols.pbft:PBFT",
    "raft": "nodes.protocols.raft:Raft",
    "twopc": "nodes.protocols.twopc:TwoPC",
    "threepc": "nodes.protocols.threepc:ThreePC",
    "paxos": "nodes.protocols.paxos:Paxos",
    "multipaxos": "nodes.protocols.multipaxos:MultiPaxos",
    "gossip": "nodes.protocols.gossip:Gossip",
    "swim": "nodes.protocols.swim:Swim",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Core]:
    """The core class registered as ``name``; KeyError names the known ones."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown protocol {shown(name)} (known: {', '.join(names())})") from None
    return load(target)
