"""PBFT's view change, a part of the replica in pbft.py (a mixin of it).

A backup with client requests waiting hands the old ones to the primary (it may never have
had them) after half of ``request_timeout``; when no request was executed for a whole timeout
since the oldest came (or the oldest waited CENSOR timeouts: a primary that orders others'
requests but not that one), it leaves the view: VIEW-CHANGE to everyone, with its stable
checkpoint and its proof, and its prepared certificates above it. f+1 VIEW-CHANGEs for
higher views make a replica join. The new primary builds NEW-VIEW from 2f+1 valid ones: the
highest checkpoint among them (min-s) and, for each sequence number above it up to the
highest prepared one (max-s), the request of the prepared certificate of the highest view,
else the null request (pbft_msgs.plan_new_view). Backups check every VIEW-CHANGE in it and
recompute those pre-prepares; a NEW-VIEW that differs is refused, and the view-change timer
(doubling each time) moves everyone on to the next view.
"""

from __future__ import annotations

from typing import Any

from nodes.protocols import kv
from nodes.protocols import pbft_msgs as m
from nodes.signing import request_bytes

TIMER_REQUEST, TIMER_VIEW_CHANGE = "request", "view_change"
FORWARD_MAX = 64           # requests a backup hands the primary in one message
CENSOR = 4                 # a request waiting this many request timeouts changes the view anyway


class ViewChange:
    """The view-change half of :class:`nodes.protocols.pbft.PBFT`."""

    def arm_request_timer(self) -> None:
        if self.waiting:
            self.arm(TIMER_REQUEST, self.config.request_timeout / 4)

    def on_request_timer(self) -> None:
        """A backup with requests waiting: hand the old ones to the primary (it may never have
        had them), and start a view change when no request was executed for a whole timeout
        since the oldest came, or when the oldest waited CENSOR times as long (a primary that
        orders others' requests but not this one)."""
        if not self.active or self.is_primary or not self.waiting:
            return
        now, t = self.ctx.now() + 1e-6, self.config.request_timeout   # + a rounding error's worth
        oldest = next(iter(self.waiting.values())).since
        if now - max(oldest, self.progress_at) >= t or now - oldest >= CENSOR * t:
            self.start_view_change(self.view + 1)
            return
        old = []
        for w in self.waiting.values():
            if now - w.since < t / 2:
                break
            if not w.forwarded:
                w.forwarded = True
                old.append(w.op)
        for k in range(0, len(old), FORWARD_MAX):
            self.send(self.primary(self.view), m.REQUEST,
                      self.sign(m.REQUEST, {"reqs": old[k:k + FORWARD_MAX]}))
        self.arm_request_timer()

    def handle_forwarded(self, src: str, b: dict[str, Any]) -> None:
        if not self.is_primary:
            return
        if not self.valid(b["i"], m.signed_bytes(m.REQUEST, b), b["sig"]):
            self.drop(m.REQUEST, src, "bad_signature")
            return
        for op in b["reqs"]:
            if kv.validate(op) or self.kv.answered(op) is not None:
                continue
            if self.known_rd(op) is not None:
                continue                 # we have it already
            data = request_bytes(op)
            rd = m.digest_bytes(data)
            if not self.valid_client(data, op.get("sig")):
                self.drop(m.REQUEST, src, "bad_request")
                continue
            self.take_request(rd, op, None)

    def start_view_change(self, w: int, again: bool = False) -> None:
        """Leave the current view for view ``w``: VIEW-CHANGE to everyone, wait for NEW-VIEW."""
        if w < self.view or (w == self.view and not again):
            return
        self.view, self.active = w, False
        self.vc_round += 1
        self._persist_view()
        self.disarm(TIMER_REQUEST)
        self.queue.clear()
        P = [s.cert for n, s in sorted(self.slots.items()) if s.cert is not None and n > self.h] \
            if self.vc_prepared else []
        body = {"v": w, "n": self.h, "cd": self.stable_d, "C": self.stable_proof, "P": P}
        if self.faulty is not None:
            body = self.faulty.view_change(body)
        self.sign(m.VIEW_CHANGE, body)
        self.broadcast(m.VIEW_CHANGE, body)
        self.vcs.setdefault(w, {})[self.me] = body
        self.disarm(TIMER_VIEW_CHANGE)
        self.arm(TIMER_VIEW_CHANGE, self.config.view_change_timeout * 2 ** min(self.vc_round - 1, 6))
        self._trace_state()
        self.maybe_new_view(w)

    def handle_view_change(self, src: str, b: dict[str, Any]) -> None:
        w, i = b["v"], b["i"]
        if i == self.me:
            return
        if w < self.view or (w == self.view and self.active):
            # The sender is behind: what we installed tells it where the views went.
            if self.last_nv is not None and self.last_nv["v"] >= w:
                self.send(i, m.NEW_VIEW, self.last_nv)
            return
        if self.vc_view.get(i, -1) >= w:
            return
        if not self.valid_view_change(b, w):
            self.drop(m.VIEW_CHANGE, src, "bad_view_change")
            return
        old = self.vc_view.get(i)
        if old is not None:
            self.vcs.get(old, {}).pop(i, None)      # one VIEW-CHANGE per replica: the newest
        self.vc_view[i] = w
        self.vcs.setdefault(w, {})[i] = b
        # f+1 replicas want a view above ours: one of them is honest, so join (the lowest
        # view at least f+1 of them are at or beyond).
        above = sorted((v for v in self.vc_view.values() if v > self.view), reverse=True)
        if len(above) >= self.f + 1:
            self.start_view_change(above[self.f])
        self.maybe_new_view(w)

    def valid_view_change(self, b: dict[str, Any], w: int) -> bool:
        if not m.well_formed(m.VIEW_CHANGE, b) or b["v"] != w or b["i"] not in self.replicas:
            return False
        if not self.valid(b["i"], m.signed_bytes(m.VIEW_CHANGE, b), b["sig"]):
            return False
        n = b["n"]
        if not self.proven(n, b["cd"], b["C"]):
            return False
        seen: set[int] = set()
        for v, sn, d, ppsig, prepares, batch in b["P"]:
            if sn in seen or not n < sn <= n + self.L or v >= w:
                return False
            seen.add(sn)
            p = self.primary(v)
            if m.digest_of(batch) != d or not self.valid(p, m.vote_bytes(m.PRE_PREPARE, v, sn, d, p), ppsig):
                return False
            if not m.count_signers(self.valid, prepares,
                                   lambda j, v=v, sn=sn, d=d: m.vote_bytes(m.PREPARE, v, sn, d, j),
                                   self.prepared_need, self.replicas, exclude=p):
                return False
        return True

    def maybe_new_view(self, w: int) -> None:
        if self.active or self.view != w or self.primary(w) != self.me:
            return
        got = self.vcs.get(w, {})
        if self.me not in got or len(got) < self.quorum:
            return
        vcs = [got[self.me], *(got[j] for j in sorted(got) if j != self.me)][:self.quorum]
        base, plan = m.plan_new_view(vcs)
        pps = [[n, d, batch, self.keys.sign(m.vote_bytes(m.PRE_PREPARE, w, n, d, self.me))]
             for n, d, batch in plan]
        body = {"v": w, "V": vcs, "O": pps}
        if self.faulty is not None:
            body = self.faulty.new_view(body)
        self.sign(m.NEW_VIEW, body)
        self.broadcast(m.NEW_VIEW, body)
        self.install_view(w, body, base, pps)

    def handle_new_view(self, src: str, b: dict[str, Any]) -> None:
        w = b["v"]
        if w < self.view or (w == self.view and self.active) or b["i"] == self.me:
            return
        base = self.check_new_view(src, b, w)
        if base is not None:
            self.install_view(w, b, base, b["O"])

    def check_new_view(self, src: str, b: dict[str, Any], w: int) -> dict[str, Any] | None:
        """The VIEW-CHANGE a NEW-VIEW for view ``w`` takes its checkpoint from, if the NEW-VIEW
        holds: its primary signed it, it carries 2f+1 valid VIEW-CHANGEs from distinct
        replicas, and its pre-prepares are exactly what those imply (recomputed here) and
        signed by the primary. Else None, and the NEW-VIEW is dropped and traced."""
        p = self.primary(w)
        if b["i"] != p or not self.valid(p, m.signed_bytes(m.NEW_VIEW, b), b["sig"]):
            return self.refuse(src, "bad_signature")
        their = b["V"]
        senders = set()
        for vc in their:
            if not isinstance(vc.get("i"), str) or vc["i"] in senders or not self.valid_view_change(vc, w):
                return self.refuse(src, "bad_new_view")
            senders.add(vc["i"])
        if len(senders) < self.quorum:
            return self.refuse(src, "bad_new_view")
        base, plan = m.plan_new_view(their)
        pps = b["O"]
        if len(pps) != len(plan):
            return self.refuse(src, "new_view_mismatch")
        for (n, d, batch, sig), (pn, pd, _) in zip(pps, plan, strict=True):
            if n != pn or d != pd or m.digest_of(batch) != d \
                    or not self.valid(p, m.vote_bytes(m.PRE_PREPARE, w, n, d, p), sig):
                return self.refuse(src, "new_view_mismatch")
        return base

    def refuse(self, src: str, why: str) -> None:
        self.drop(m.NEW_VIEW, src, why)

    def install_view(self, w: int, nv: dict[str, Any], base: dict[str, Any], pps: list[list[Any]]) -> None:
        """Enter view ``w`` from a NEW-VIEW (ours or a verified one): its checkpoint, its
        pre-prepares (prepared again by everyone), then the requests still waiting."""
        self.view, self.active, self.vc_round, self.last_nv = w, True, 0, nv
        self._persist_view()
        self.disarm(TIMER_VIEW_CHANGE)
        self.asked_nv = {v for v in self.asked_nv if v > w}
        for v in [v for v in self.vcs if v <= w]:
            del self.vcs[v]
        self.ordered, self.queue = set(), {}
        if base["n"] > self.h:
            self.make_stable(base["n"], base["cd"], base["C"])
        me_primary = self.primary(w) == self.me
        top = base["n"]
        for n, d, batch, sig in pps:
            top = max(top, n)
            if n <= self.h:
                continue
            rds = [self.known_rd(op) or m.request_digest(op) for op in batch]
            s = self.slot(n)
            s.pp[w] = (d, batch, sig)
            s.mine = rds
            self._log(["pp", w, n, d, batch, sig])
            self.ordered.update(rds)
            if not me_primary:
                self.cast(m.PREPARE, s, w, n, d)
            self.maybe_prepared(n, s, w, d)
        self.next_seq = max(top, self.h, self.last_exec) + 1
        now = self.progress_at = self.ctx.now()
        for w_ in self.waiting.values():             # the new primary gets a fresh timeout
            w_.since, w_.forwarded = now, False
        self._trace_state(new_view={"min_s": base["n"], "O": {str(e[0]): e[1] for e in pps}})
        if me_primary:
            self.queue = {rd: x.op for rd, x in self.waiting.items() if rd not in self.ordered}
            self.maybe_propose()
        else:
            self.arm_request_timer()
        early, self.early = self.early, [e for e in self.early if e[1]["v"] > w]
        for type, body in early:
            if body["v"] == w:
                self._on[type](body["i"], body)
        self._execute_ready()
