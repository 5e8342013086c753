"""PBFT's checkpoints and catching up, a part of the replica in pbft.py (a mixin of it).

Every ``checkpoint_interval`` sequence numbers a replica hashes its state and signs a
CHECKPOINT; 2f+1 matching ones make it *stable*: the low watermark h moves there and the log
below it is dropped, so memory stays bounded however long the run. A replica that fell
behind learns it from the votes it sees: when f+1 replicas voted on sequence numbers it has
not executed (one of them is honest), and it made no progress for ``fetch_timeout``, it asks
a peer for committed certificates (a batch and 2f+1 signed commits: anyone can check them),
or, when what it lacks is below a stable checkpoint, for the state itself, which it checks
against the digest 2f+1 replicas signed.
"""

from __future__ import annotations

from typing import Any

from nodes.protocols import pbft_msgs as m

TIMER_FETCH = "fetch"
CERTS_MAX = 16             # committed certificates in one answer to a fetch


class Checkpoints:
    """The checkpoint and catch-up half of :class:`nodes.protocols.pbft.PBFT`."""

    def take_checkpoint(self, n: int) -> None:
        state = self._state_bytes()
        d = m.state_digest(state)
        self.own_ckpt[n] = (d, state)
        body = self.sign(m.CHECKPOINT, {"n": n, "d": d})
        self.broadcast(m.CHECKPOINT, body)
        self.count_checkpoint(n, d, self.me, body["sig"])

    def handle_checkpoint(self, src: str, b: dict[str, Any]) -> None:
        n, d, i = b["n"], b["d"], b["i"]
        if n <= self.h or n % self.K:
            return
        if self.ckpt_votes.get(n, {}).get(i) is not None:
            return
        if not self.valid(i, m.checkpoint_bytes(n, d, i), b["sig"]):
            self.drop(m.CHECKPOINT, src, "bad_signature")
            return
        self.count_checkpoint(n, d, i, b["sig"])

    def count_checkpoint(self, n: int, d: str, i: str, sig: bytes) -> None:
        if n <= self.h:
            return
        if n > self.h + self.L:
            # Far ahead of us: keep each replica's newest only (bounded), and see whether a
            # quorum agrees on one; then we are behind and fetch the state.
            old = self.far_ckpts.get(i)
            if old is None or old[0] < n:
                self.far_ckpts[i] = (n, d, sig)
            same = [[j, s] for j, (nn, dd, s) in self.far_ckpts.items() if nn == n and dd == d]
            if len(same) >= self.quorum:
                self.make_stable(n, d, same)
            return
        votes = self.ckpt_votes.setdefault(n, {})
        votes[i] = (d, sig)
        same = [[j, s] for j, (dd, s) in votes.items() if dd == d]
        if len(same) >= self.quorum:
            self.make_stable(n, d, same)

    def make_stable(self, n: int, d: str, proof: list[list[Any]]) -> None:
        """Checkpoint ``n`` is stable: move the low watermark and drop the log below it."""
        if n <= self.h:
            return
        self.h, self.stable_d, self.stable_proof = n, d, proof
        own = self.own_ckpt.get(n)
        self.stable_state = own[1] if own is not None and own[0] == d else None
        for k in [k for k in self.slots if k <= n]:
            del self.slots[k]
        for k in [k for k in self.ckpt_votes if k <= n]:
            del self.ckpt_votes[k]
        for k in [k for k in self.own_ckpt if k < n]:
            del self.own_ckpt[k]
        for j in [j for j, v in self.far_ckpts.items() if v[0] <= n]:
            del self.far_ckpts[j]
        self.ctx.trace("log", data={"msg": "stable checkpoint", "seq": n, "digest": d})
        if self.stable_state is not None:
            self._persist_checkpoint()
        if self.last_exec < n:
            self.fetch("state", n)
        self.after_progress()

    # -- catching up ------------------------------------------------------------------------------
    def saw_vote(self, i: str, n: int) -> None:
        if n > self.ahead.get(i, 0):
            self.ahead[i] = n
            if n > self.last_exec + 1:
                self.maybe_fetch_later()

    def seen_ahead(self) -> int:
        """The highest seq f+1 replicas were seen voting on (so at least one honest one did)."""
        if len(self.ahead) <= self.f:
            return 0
        return sorted(self.ahead.values(), reverse=True)[self.f]

    def behind(self) -> bool:
        return self.h > self.last_exec or self.seen_ahead() > self.last_exec

    def maybe_fetch_later(self) -> None:
        if TIMER_FETCH not in self.timers and self.behind():
            self.fetch_mark = self.last_exec
            self.arm(TIMER_FETCH, self.config.fetch_timeout)

    def on_fetch_timer(self) -> None:
        if not self.behind():
            return
        if self.last_exec == self.fetch_mark:       # no progress for a whole period: ask
            if self.h > self.last_exec or self.seen_ahead() > self.h + self.L:
                self.fetch("state", max(self.h, self.last_exec + 1))
            else:
                self.fetch("certs", self.last_exec + 1)
        self.maybe_fetch_later()

    def fetch(self, what: str, n: int) -> None:
        peer = self.peers[self.fetch_turn % len(self.peers)] if self.peers else None
        self.fetch_turn += 1
        if peer is not None:
            self.send(peer, m.FETCH, self.sign(m.FETCH, {"what": what, "n": n}))

    def handle_fetch(self, src: str, b: dict[str, Any]) -> None:
        i, what, n = b["i"], b["what"], b["n"]
        if i == self.me or not self.valid(i, m.signed_bytes(m.FETCH, b), b["sig"]):
            self.drop(m.FETCH, src, "bad_signature")
            return
        if what == "new_view":
            if self.last_nv is not None and self.last_nv["v"] >= n:
                self.send(i, m.NEW_VIEW, self.last_nv)
            return
        if what == "state" or n <= self.h:
            if self.stable_state is not None and self.h >= n and self.h > 0:
                self.send(i, m.STATE, self.sign(m.STATE, {"n": self.h, "d": self.stable_d,
                                                          "state": self.stable_state,
                                                          "C": self.stable_proof}))
            return
        certs = []
        for k in range(n, n + CERTS_MAX):
            s = self.slots.get(k)
            if s is None or s.done is None:
                break
            certs.append(s.done)
        if certs:
            self.send(i, m.CERTS, self.sign(m.CERTS, {"certs": certs}))

    def handle_certs(self, src: str, b: dict[str, Any]) -> None:
        if not self.valid(b["i"], m.signed_bytes(m.CERTS, b), b["sig"]):
            self.drop(m.CERTS, src, "bad_signature")
            return
        for v, n, d, batch, commits in b["certs"]:
            if n <= self.last_exec or not self.in_window(n):
                continue
            s = self.slot(n)
            if s.done is not None and s.done[0] >= v:
                continue
            if m.digest_of(batch) != d or not m.count_signers(
                    self.valid, commits, lambda j, v=v, n=n, d=d: m.vote_bytes(m.COMMIT, v, n, d, j),
                    self.quorum, self.replicas):
                self.drop(m.CERTS, src, "bad_certificate")
                return
            self.mark_done(n, s, [v, n, d, batch, commits])

    def handle_state(self, src: str, b: dict[str, Any]) -> None:
        n, d, state, proof = b["n"], b["d"], b["state"], b["C"]
        if n <= self.last_exec:
            return
        if not (self.valid(b["i"], m.signed_bytes(m.STATE, b), b["sig"])
                and m.state_digest(state) == d and self.proven(n, d, proof)):
            self.drop(m.STATE, src, "bad_state")
            return
        try:
            self._load_state(state)
        except (ValueError, TypeError):
            self.drop(m.STATE, src, "bad_state")
            return
        self.last_exec = n
        self.next_seq = max(self.next_seq, n + 1)
        self.own_ckpt[n] = (d, state)
        self.ctx.trace("log", data={"msg": "state transfer", "seq": n, "digest": d, "from": b["i"]})
        if n > self.h:
            self.make_stable(n, d, proof)
        else:
            self.stable_state = state
            self._persist_checkpoint()
        for rd in [rd for rd, w in self.waiting.items() if self.kv.answered(w.op) is not None]:
            w = self.waiting.pop(rd)
            self.known.pop(w.op.get("sig"), None)
            self.ordered.discard(rd)
            self.queue.pop(rd, None)
            if w.handle is not None:
                self.reply(w.handle, self.kv.answered(w.op) or {"type": "info"})
        self._execute_ready()

    def proven(self, n: int, d: str, proof: list[list[Any]]) -> bool:
        """Whether ``proof`` is 2f+1 signed CHECKPOINTs of (n, d), or n is the initial state."""
        if n == 0:
            return d == self.genesis_d
        return n % self.K == 0 and m.count_signers(
            self.valid, proof, lambda j: m.checkpoint_bytes(n, d, j), self.quorum, self.replicas)
