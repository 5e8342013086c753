"""The code of a faulty PBFT replica: the Byzantine behaviours a node is given in YAML.

``nodes: [{name: n1, byzantine: [equivocate]}, n2, n3, n4]`` makes n1 run the replica of
pbft.py with a :class:`Faulty` beside it: every message the replica sends passes through
:meth:`Faulty.send`, and a few hooks let it lie where a real attacker would. It is sans-IO
like the rest (it acts through the replica's context; its choices come from ``ctx.rng``), so
a faulty run replays from its seed like any other.

Faulty replicas *collude*: each knows every node marked ``byzantine`` in the scenario. They
split the honest replicas the same way (the first half, in scenario order, hears one story;
the rest, :attr:`Faulty.group_b`, the other), compute the same alternative batches and make
up the same answers, so f+1 of them act as one.

What the faulty replica signs, it signs with its own key: it holds no other. A message in
another replica's name, or a request in a client's, therefore carries a wrong signature, and
only a replica that does not check signatures (the bug ``no_signature_check``) takes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Protocol

from nodes.protocols import pbft_msgs as m
from nodes.protocols.core import Context
from nodes.signing import request_bytes


class Replica(Protocol):
    """What a faulty replica uses of the PBFT core it rides on (pbft.py's ``PBFT``), named here
    so that this module need not import pbft.py, which imports it."""

    ctx: Context
    me: str
    replicas: list[str]
    peers: list[str]
    keys: Any
    slots: dict[int, Any]

    def primary(self, view: int) -> str: ...

BEHAVIOURS = {
    "silent": "sends nothing and answers no client (it still receives): a crashed replica that "
              "looks alive",
    "equivocate": "as primary, sends one batch to half of the honest backups and another batch "
                  "(reversed, or the null request) to the rest, for the same (view, seq); as "
                  "backup, prepares and commits one digest to one half and another to the other",
    "forge": "every few sequence numbers, sends a pre-prepare in the primary's name holding a "
             "write no client sent, with prepares and commits in the other replicas' names, all "
             "signed with its own (wrong) key",
    "wrong_digest": "as primary, sends pre-prepares whose digest does not match their batch; as "
                    "backup, prepares and commits a digest nobody proposed",
    "replay": "re-sends old messages it sent or received, and as primary re-proposes old batches "
              "at old sequence numbers, below the stable checkpoint",
    "lie_in_view_change": "claims prepared certificates it does not hold in its VIEW-CHANGE "
                          "(made-up requests, prepares it signed in others' names); as the new "
                          "primary, sends a NEW-VIEW whose pre-prepares differ from what its "
                          "VIEW-CHANGEs imply (one made-up request more)",
    "wrong_reply": "answers every client at once with a made-up result (a read: a value nobody "
                   "wrote); colluding replicas make up the same one",
}

FORGE_EVERY = 4        # a forgery after every FORGE_EVERY-th pre-prepare it receives
REPLAY_EVERY = 3       # an old message re-sent per this many received
REPLAY_MEMORY = 32     # messages remembered for replaying
VOTES = (m.PRE_PREPARE, m.PREPARE, m.COMMIT)


def alt_batch(batch: list[Any]) -> list[Any]:
    """The other story an equivocating primary tells: the batch reversed, or the null request."""
    return batch[::-1] if len(batch) > 1 else []


def made_up_digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


class Faulty:
    def __init__(self, core: Replica, behaviours: Iterable[str]) -> None:
        self.core = core
        self.ctx = core.ctx
        self.behaviours = frozenset(behaviours)
        nodes = core.ctx.nodes
        self.colluders = [r for r in core.replicas if (nodes.get(r) or {}).get("byzantine")]
        honest = [r for r in core.replicas if r not in self.colluders]
        self.group_b = frozenset(honest[len(honest) // 2:])
        self.silent = "silent" in self.behaviours
        self.alt: dict[tuple[int, int, str], str] = {}
        self.told: set[tuple[int, int]] = set()
        self.memory: list[tuple[str, dict[str, Any]]] = []
        self.batches: dict[int, list[Any]] = {}
        self.received = 0
        self.pps = 0

    def has(self, behaviour: str) -> bool:
        return behaviour in self.behaviours

    def note(self, behaviour: str, **what: Any) -> None:
        self.ctx.trace("log", data={"msg": "byzantine", "behaviour": behaviour, **what})

    def sign(self, type: str, v: int, n: int, d: str, as_: str) -> bytes:
        return self.core.keys.sign(m.vote_bytes(type, v, n, d, as_))

    # -- every message the replica sends ------------------------------------------------------
    def may_reply(self) -> bool:
        return not self.silent

    def send(self, dst: str, type: str, body: dict[str, Any]) -> None:
        if self.silent:
            return
        if type in VOTES and body.get("i") == self.core.me:
            if self.has("wrong_digest"):
                body = self.rewrite(type, body, made_up_digest("wrong", body["d"]), body.get("batch"))
            if self.has("equivocate") and dst in self.group_b:
                body = self.equivocal(type, body)
        self.ctx.send(dst, type, body)
        if self.has("replay"):
            self.remember(type, body)

    def rewrite(self, type: str, body: dict[str, Any], d: str, batch: list[Any] | None) -> dict[str, Any]:
        out = {"v": body["v"], "n": body["n"], "d": d, "i": self.core.me,
               "sig": self.sign(type, body["v"], body["n"], d, self.core.me)}
        if type == m.PRE_PREPARE:
            out["batch"] = batch if batch is not None else []
        return out

    def equivocal(self, type: str, body: dict[str, Any]) -> dict[str, Any]:
        v, n, d = body["v"], body["n"], body["d"]
        if type == m.PRE_PREPARE:
            other = alt_batch(body["batch"])
            if (v, n) not in self.told:
                self.told.add((v, n))
                self.note("equivocate", view=v, seq=n, to=sorted(self.group_b))
            return self.rewrite(type, body, m.digest_of(other), other)
        return self.rewrite(type, body, self.alt_digest(v, n, d), None)

    def alt_digest(self, v: int, n: int, d: str) -> str:
        """The digest of the other story for (v, n): what a colluding primary sent group B."""
        key = (v, n, d)
        got = self.alt.get(key)
        if got is None:
            s = self.core.slots.get(n)
            pp = s.pp.get(v) if s is not None else None
            got = m.digest_of(alt_batch(pp[1])) if pp is not None and pp[0] == d \
                else made_up_digest("equivocate", v, n, d)
            if len(self.alt) > 4096:
                self.alt.clear()
            self.alt[key] = got
        return got

    # -- hooks ---------------------------------------------------------------------------------
    def on_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if self.silent:
            return
        if self.has("replay"):
            self.remember(type, body)
            self.received += 1
            if self.received % REPLAY_EVERY == 0 and self.memory and self.core.peers:
                old_type, old = self.ctx.rng.choice(self.memory)
                self.ctx.send(self.ctx.rng.choice(self.core.peers), old_type, old)
        if self.has("forge") and type == m.PRE_PREPARE and body["i"] != self.core.me:
            self.pps += 1
            if self.pps % FORGE_EVERY == 0:
                batch = body["batch"]
                key = batch[0].get("key", "k0") if batch else "k0"
                self.forge(body["v"], body["n"] + 1, key)

    def on_request(self, client: str, op: dict[str, Any]) -> None:
        if self.has("wrong_reply") and not self.silent and isinstance(op, dict):
            # Shaped like an honest reply (which names the primary), so that a lie about a
            # write matches the truth and only made-up read values tell.
            lie: dict[str, Any] = {"type": "ok", "primary": self.core.primary(self.core.view)}
            if op.get("f") == "read":
                lie["value"] = f"lie-{op.get('client')}-{op.get('seq')}"
            self.ctx.reply(client, lie)

    def on_timer(self, name: str) -> None:
        """No timers of its own yet; a name it does not know is ignored, as the replica's are."""

    def proposed(self, n: int, batch: list[Any]) -> None:
        """The replica (as primary) just sent a pre-prepare for ``n``."""
        if not self.has("replay") or self.silent:
            return
        core = self.core
        self.batches[n] = batch
        for k in [k for k in self.batches if k <= core.h - 2 * core.L]:
            del self.batches[k]
        if n % 2 or core.h < 1:
            return
        # An old batch at an old sequence number, below the stable checkpoint (replicas that
        # check watermarks drop it; the log that would show the conflict is gone).
        seq = self.ctx.rng.randrange(max(1, core.h - core.L + 1), core.h + 1)
        olds = [k for k in sorted(self.batches) if k != seq and self.batches[k]]
        if not olds:
            return
        old = self.batches[self.ctx.rng.choice(olds)]
        d, v = m.digest_of(old), core.view
        if seq in self.batches and m.digest_of(self.batches[seq]) == d:
            return
        body = {"v": v, "n": seq, "d": d, "batch": old, "i": core.me,
                "sig": self.sign(m.PRE_PREPARE, v, seq, d, core.me)}
        self.note("replay", view=v, seq=seq, digest=d)
        for p in core.peers:
            self.ctx.send(p, m.PRE_PREPARE, body)

    def view_change(self, body: dict[str, Any]) -> dict[str, Any]:
        core, w, base = self.core, body["v"], body["n"]
        if not self.has("lie_in_view_change") or core.primary(w) == core.me:
            return body      # the primary-to-be keeps its VIEW-CHANGE true and lies in its NEW-VIEW
        have = {e[1] for e in body["P"]}
        lies = []
        for sn in range(base + 1, base + 3):
            if sn in have:
                continue
            v = max(0, w - 1)
            p = core.primary(v)
            batch = [self.invented(sn)]
            d = m.digest_of(batch)
            prepares = [[j, self.sign(m.PREPARE, v, sn, d, j)] for j in core.replicas if j != p]
            lies.append([v, sn, d, self.sign(m.PRE_PREPARE, v, sn, d, p),
                         prepares[:core.prepared_need], batch])
        self.note("lie_in_view_change", view=w, claimed=[e[1] for e in lies])
        return {**body, "P": sorted([*body["P"], *lies], key=lambda e: e[1])}

    def new_view(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.has("lie_in_view_change"):
            return body
        core, w = self.core, body["v"]
        top = max([e[0] for e in body["O"]] + [max(vc["n"] for vc in body["V"])])
        batch = [self.invented(top + 1)]
        d = m.digest_of(batch)
        extra = [top + 1, d, batch, self.sign(m.PRE_PREPARE, w, top + 1, d, core.me)]
        self.note("lie_in_view_change", view=w, added_seq=top + 1)
        return {**body, "O": [*body["O"], extra]}

    # -- making things up -----------------------------------------------------------------------
    def invented(self, seq: int, key: Any = "k0") -> dict[str, Any]:
        """A write no client sent, signed with this replica's key in the clients' place."""
        me = self.core.me
        op = {"f": "write", "key": key, "value": f"forged-by-{me}", "client": f"forger-{me}",
              "seq": seq}
        op["sig"] = self.core.keys.sign(request_bytes(op))
        return op

    def forge(self, v: int, n: int, key: Any) -> None:
        core = self.core
        p = core.primary(v)
        batch = [self.invented(n, key)]
        d = m.digest_of(batch)
        pp = {"v": v, "n": n, "d": d, "batch": batch, "i": p,
              "sig": self.sign(m.PRE_PREPARE, v, n, d, p)}
        votes = [(t, {"v": v, "n": n, "d": d, "i": j, "sig": self.sign(t, v, n, d, j)})
                 for j in core.replicas for t in (m.PREPARE, m.COMMIT)
                 if not (t == m.PREPARE and j == p)]
        self.note("forge", view=v, seq=n, in_the_name_of=p)
        for dst in core.peers:
            if dst != p:
                self.ctx.send(dst, m.PRE_PREPARE, pp)
            for t, b in votes:
                if b["i"] != dst:
                    self.ctx.send(dst, t, b)

    def remember(self, type: str, body: dict[str, Any]) -> None:
        self.memory.append((type, body))
        if len(self.memory) > REPLAY_MEMORY:
            del self.memory[0]
