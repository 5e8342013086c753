"""Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm") as a sans-IO core.

Shaped like etcd-io/raft: ``become_follower`` / ``become_pre_candidate`` /
``become_candidate`` / ``become_leader`` swap the ``_step`` (messages) and
``_tick`` (timers) handlers; the verbs are ``handle_*`` (react to a message),
``maybe_*`` (act if a condition holds) and ``broadcast_*`` (to every peer).

What it implements (see docs/raft.md for the long form):

* Leader election with randomized timeouts drawn from ``ctx.rng``, the
  election restriction (vote only for a log at least as up to date), and the
  optional Pre-Vote phase and CheckQuorum step-down of the Raft thesis.
* Log replication with the AppendEntries consistency check and fast
  backtracking: a rejection carries the conflicting term and the first index
  the follower holds of it, so the leader skips a whole term per round trip.
* Commitment only of current-term entries by counting replicas (Figure 8);
  earlier entries commit with them. A new leader appends a no-op so that
  this happens without waiting for a client.
* Durable ``hard`` state (term, vote, commit index: etcd's HardState) with
  ``storage.put`` and the log with ``storage.log_append``/``log_truncate``:
  an append writes only the new entries. Term and vote are written before
  the handler that changed them sends anything; a changed commit index rides
  along with the next write (or a leader's heartbeat), as etcd syncs
  HardState only with entries, term or vote.
* A key-value state machine (``kv.py``) with exactly-once (client, seq)
  dedup. Reads go through the log like writes: a read is answered when its
  own entry is applied, which proves the leader still led when the entry
  committed, so a deposed leader can never answer a stale read.
* Batching: requests are appended as they arrive; each follower has at most
  ``MAX_INFLIGHT`` AppendEntries carrying entries in flight, and what
  accumulates meanwhile leaves in one message of up to
  ``max_append_entries`` entries.

Every log entry carries a chain hash (docs/trace.md) so the checkers compare
logs by hash; it is computed locally by every node, never sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

from nodes.protocols import kv
from nodes.protocols.core import ConfigValueError, Context, Core, Tunables, check_timing

# The command codec lives with the state machine (kv.py); these names are Raft's since before.
from nodes.protocols.kv import CMD_FIELDS, encode_command  # noqa: F401
from nodes.protocols.kv import decode_command as _decode
from nodes.protocols.kv import encode_flat as _encode_flat

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre_candidate", "candidate", "leader"

MSG_VOTE = "request_vote"
MSG_VOTE_RESP = "request_vote_resp"
MSG_APP = "append_entries"
MSG_APP_RESP = "append_entries_resp"

HARD = "hard"          # storage key of {"term", "vote", "commit"}
LOG = "log"            # storage log of [term, command] entries, index 1 first
MAX_INFLIGHT = 2       # appends with entries in flight per follower; more requests wait and batch

TIMER_ELECTION, TIMER_HEARTBEAT, TIMER_QUORUM = "election", "heartbeat", "quorum"
TIMER_VOTE_RETRY = "vote_retry"    # a candidate asks again, every heartbeat, whoever has not answered


def chain_hash(prev: str, term: int, command: str | None) -> str:
    """``h[i] = blake2b(h[i-1] ‖ term ‖ command)`` (8 bytes, hex) over the bytes of the JSON
    array ``[prev, term, command]`` (sorted keys, no spaces; a no-op's command is null).
    ``command`` is already canonical JSON, so the array is spliced, not re-encoded."""
    chain = [prev]
    extend_chain(chain, [(term, command)])
    return chain[1]


# Every hash starts with the bytes '["': a copy of a hasher that has eaten them is cheaper
# than a new blake2b (whose digest_size argument alone costs about a third of a hash).
_CHAIN_HEAD = hashlib.blake2b(b'["', digest_size=8).copy


def extend_chain(hashes: list[str], entries: list[Any]) -> None:
    """Append to ``hashes`` the :func:`chain_hash` of each ``[term, command]`` of ``entries``,
    the first chained to ``hashes[-1]``: one loop for a whole append, on every node."""
    h, head, add = hashes[-1], _CHAIN_HEAD, hashes.append
    for term, command in entries:
        hasher = head()
        hasher.update(f'{h}",{term},{"null" if command is None else command}]'.encode())
        h = hasher.hexdigest()
        add(h)


@dataclasses.dataclass(frozen=True)
class RaftConfig(Tunables):
    election_timeout: tuple[float, float] = dataclasses.field(
        default=(0.15, 0.3),
        metadata={"unit": "s-range", "doc": (
            "a follower that hears no leader for a time drawn uniformly from this range starts an "
            "election. Shorter: faster failover, but more spurious elections when the network is "
            "slow or lossy; a narrow range makes split votes (and repeated elections) more likely")},
    )
    heartbeat: float = dataclasses.field(
        default=0.05,
        metadata={"unit": "s", "doc": (
            "how often a leader sends AppendEntries to every follower even with nothing new; it "
            "keeps followers from starting elections and carries the commit index. Must be well "
            "below election_timeout; shorter costs messages, longer risks needless elections")},
    )
    pre_vote: bool = dataclasses.field(
        default=False,
        metadata={"unit": "bool", "doc": (
            "before raising its term a would-be candidate asks whether it could win (Raft thesis "
            "9.6); a node cut off from the majority then cannot inflate its term and depose a "
            "healthy leader when it returns. Costs one extra round trip per election")},
    )
    check_quorum: bool = dataclasses.field(
        default=False,
        metadata={"unit": "bool", "doc": (
            "a leader that has not heard from a majority within an election timeout steps down, "
            "and followers that heard from their leader within the minimum election timeout "
            "ignore vote requests. A minority leader stops accepting writes sooner; a leader may "
            "step down on a slow network that would otherwise have recovered")},
    )
    max_append_entries: int = dataclasses.field(
        default=64,
        metadata={"unit": "count", "doc": (
            "most log entries in one AppendEntries. Larger batches raise throughput under load; "
            "smaller ones keep messages small and a lagging follower's catch-up steps short")},
    )

    def __post_init__(self) -> None:
        check_timing(self.election_timeout, self.heartbeat)
        if self.max_append_entries < 1:
            raise ConfigValueError("max_append_entries", "must be at least 1")


class Progress:
    """The leader's view of one follower (etcd's Progress, probe and replicate states)."""

    __slots__ = ("next", "match", "inflight", "probing", "paused")

    def __init__(self, next_index: int) -> None:
        self.next = next_index      # index of the next entry to send
        self.match = 0              # highest index known to be replicated there
        self.inflight = 0           # appends with entries sent and not yet acknowledged
        self.probing = True         # looking for the match point: one append at a time
        self.paused = False         # probing and a probe is out: wait for its answer or a heartbeat


def well_formed(kind: str, body: Any) -> bool:
    """Whether a message body of type ``kind`` has the fields and types its handler relies on.

    Written out per type rather than as a schema walk, with ``type(v) is int`` inline (a bool
    is not an int here): it runs for every message.
    """
    if not isinstance(body, dict):
        return False
    g = body.get
    if type(g("term")) is not int:
        return False
    if kind == MSG_APP:
        entries = g("entries")
        if not (type(g("prev_index")) is int and type(g("prev_term")) is int and type(g("commit")) is int
                and isinstance(entries, (list, tuple)) and body["prev_index"] >= 0):
            return False
        for e in entries:
            if not (isinstance(e, (list, tuple)) and len(e) == 2 and type(e[0]) is int
                    and (e[1] is None or isinstance(e[1], str))):
                return False
        return True
    if kind == MSG_APP_RESP:
        ct = g("conflict_term")
        return (type(g("success")) is bool and type(g("index")) is int
                and type(g("prev_index")) is int and (ct is None or type(ct) is int))
    if kind == MSG_VOTE:
        return type(g("last_index")) is int and type(g("last_term")) is int and type(g("pre")) is bool
    if kind == MSG_VOTE_RESP:
        return type(g("granted")) is bool and type(g("pre")) is bool
    return False


class Raft(Core):
    name = "raft"
    message_types = frozenset({MSG_VOTE, MSG_VOTE_RESP, MSG_APP, MSG_APP_RESP})
    # The leader replicates while it writes its own log (thesis 10.2.1, as etcd does): its
    # appends leave before its write is durable, and it counts itself only after
    # handle_persisted. A follower's answer still waits for its write.
    early_sends = frozenset({MSG_APP})
    tunables = RaftConfig
    presets = {"lan": {}, "wan": {"election_timeout": ["1s", "2s"], "heartbeat": "200ms"}}
    bugs = {
        "no_election_restriction": "votes ignore log up-to-dateness: a node missing committed "
                                   "entries can be elected and overwrite them (leader_completeness, "
                                   "state_machine_safety)",
        "commit_previous_term": "a leader commits entries of earlier terms by counting replicas "
                                "(Figure 8): such an entry can still be overwritten by a later "
                                "leader (state_machine_safety, leader_completeness)",
        "forget_vote": "votedFor is not made durable: a node restarted within a term can vote "
                       "twice in it, electing two leaders (election_safety)",
        "no_consistency_check": "a follower appends entries without checking prevLogIndex/"
                                "prevLogTerm, splicing them after a log that does not match "
                                "(log_matching, state_machine_safety)",
        "ack_before_commit": "the leader answers ok to a write or delete as soon as the entry is "
                             "in its own log, before a majority holds it: a leader cut off then "
                             "acknowledges writes the next leader overwrites (linearizable; late "
                             "in a run only the final reads see it)",
    }
    bug_breaks = {
        "no_election_restriction": ("leader_completeness", "state_machine_safety"),
        "commit_previous_term": ("state_machine_safety", "leader_completeness"),
        "forget_vote": ("election_safety",),
        "no_consistency_check": ("log_matching", "state_machine_safety"),
        "ack_before_commit": ("linearizable",),
    }
    default_checks = ("election_safety", "log_matching", "leader_completeness",
                      "state_machine_safety", "linearizable")

    config: RaftConfig

    def __init__(self, ctx: Context, config: Tunables | None = None) -> None:
        super().__init__(ctx, config if config is not None else RaftConfig())
        self.peers = sorted(n for n in ctx.nodes if n != ctx.node)
        self.quorum = (len(self.peers) + 1) // 2 + 1
        # Bug switches, read once: they sit on hot paths.
        self._bug_no_restriction = self.has_bug("no_election_restriction")
        self._bug_commit_previous = self.has_bug("commit_previous_term")
        self._bug_forget_vote = self.has_bug("forget_vote")
        self._bug_no_check = self.has_bug("no_consistency_check")
        self._bug_early_ack = self.has_bug("ack_before_commit")
        self.role = FOLLOWER
        self.term = 0
        self.vote: str | None = None
        self.leader: str | None = None
        # [term, command as canonical JSON or None for a no-op]; index 0 is a sentinel.
        self.log: list[list[Any]] = [[0, None]]
        self.hashes: list[str] = [""]
        self.commit = 0
        self.commit_dirty = False                   # commit index changed since `hard` was written
        self.durable = 0                            # the last index of our log known to be on disk
        self.applied = 0
        self.kv = kv.KV()
        self.votes: set[str] = set()
        self.rejects: set[str] = set()
        self.progress: dict[str, Progress] = {}
        self.pending: dict[int, str] = {}          # leader: log index -> client waiting for it
        # Leader: log index -> (its command, that command decoded), for the ops it appended
        # itself, so that applying them skips a JSON decode. Only exact round trips go here.
        self.proposed: dict[int, tuple[str, dict[str, Any]]] = {}
        self.recent_active: set[str] = set()        # leader with check_quorum: peers heard this round
        self.heard = float("-inf")                  # when we last heard from our leader
        self.dropped = 0                            # malformed messages dropped
        self._step: Callable[[str, str, dict[str, Any]], None] = self._step_follower
        self._tick: Callable[[str], None] = self._tick_election

    # -- durable state ---------------------------------------------------------
    def start(self) -> None:
        storage = self.ctx.storage
        hard = storage.get(HARD) or {}
        self.term = hard.get("term", 0)
        self.vote = hard.get("vote")
        entries = [[term, command] for term, command in storage.log_read(LOG)]
        self.log.extend(entries)
        extend_chain(self.hashes, entries)
        # A snapshot-free state machine is rebuilt by replaying the committed prefix.
        self.durable = self.last_index
        self.commit = min(hard.get("commit", 0), self.last_index)
        self._apply_committed(replay=True)
        self.become_follower(self.term, None)

    def _persist_hard(self) -> None:
        vote = None if self._bug_forget_vote else self.vote
        self.ctx.storage.put(HARD, {"term": self.term, "vote": vote, "commit": self.commit})
        self.commit_dirty = False

    def _persist_commit_lazily(self) -> None:
        """Write a changed commit index along with a write that must happen anyway.

        Like etcd, which syncs HardState only when entries, term or vote change: the commit
        index is safe to lose (a restarted node learns it again), so it never costs an fsync
        of its own on the path of a client's answer.
        """
        if self.commit_dirty:
            self._persist_hard()

    def _append(self, entries: list[list[Any]]) -> None:
        # Entries are never mutated, so the log may share them with the message they came in.
        extend_chain(self.hashes, entries)
        self.log.extend(entries)
        self.ctx.storage.log_append(LOG, entries)

    def _truncate(self, keep: int) -> None:
        """Keep entries 1..keep."""
        if keep < self.commit:
            # Only a bug (no_consistency_check) cuts committed entries; follow it through
            # so the checkers see what it does instead of the core crashing.
            self.commit = self.applied = keep
            self.commit_dirty = True
        del self.log[keep + 1:]
        del self.hashes[keep + 1:]
        self.durable = min(self.durable, keep)
        self.ctx.storage.log_truncate(LOG, keep)

    @property
    def last_index(self) -> int:
        return len(self.log) - 1

    @property
    def last_term(self) -> int:
        return self.log[-1][0]

    # -- roles -------------------------------------------------------------------
    def become_follower(self, term: int, leader: str | None) -> None:
        if self.role == LEADER:
            self._abandon_pending()
            self.proposed = {}
            self.ctx.cancel_timer(TIMER_HEARTBEAT)
            self.ctx.cancel_timer(TIMER_QUORUM)
            self.progress = {}
        if term != self.term:
            self.term, self.vote = term, None
            self._persist_hard()
        if self.role in (PRE_CANDIDATE, CANDIDATE):
            self.ctx.cancel_timer(TIMER_VOTE_RETRY)
        self.role, self.leader = FOLLOWER, leader
        if leader is not None:
            self.heard = self.ctx.now()
        self._step, self._tick = self._step_follower, self._tick_election
        self._reset_election_timer()
        self._trace_state()

    def become_pre_candidate(self) -> None:
        # No term change and no vote: a pre-candidate that cannot win leaves no mark.
        self._campaign(PRE_CANDIDATE)

    def become_candidate(self) -> None:
        self.term += 1
        self.vote = self.ctx.node
        self._persist_hard()
        self._campaign(CANDIDATE)

    def _campaign(self, role: str) -> None:
        """Vote for ourselves and ask the others; a one-node cluster wins at once."""
        pre = role == PRE_CANDIDATE
        self.role, self.leader = role, None
        self.votes, self.rejects = {self.ctx.node}, set()
        self._step, self._tick = self._step_candidate, self._tick_candidate
        self._reset_election_timer()
        self._trace_state()
        if len(self.votes) >= self.quorum:
            self.become_candidate() if pre else self.become_leader()
        else:
            self.broadcast_vote_request(pre=pre)

    def become_leader(self) -> None:
        self.role, self.leader = LEADER, self.ctx.node
        self._step, self._tick = self._step_leader, self._tick_leader
        nxt = self.last_index + 1
        self.progress = {p: Progress(nxt) for p in self.peers}
        self.pending = {}
        self.recent_active = set()
        self.ctx.cancel_timer(TIMER_ELECTION)
        self.ctx.cancel_timer(TIMER_VOTE_RETRY)
        # The log as elected (before the no-op): what leader_completeness checks.
        self._trace_state()
        # A no-op of the new term lets earlier entries commit (they may not by counting).
        self._append([[self.term, None]])
        self.ctx.set_timer(TIMER_HEARTBEAT, self.config.heartbeat)
        if self.config.check_quorum:
            self.ctx.set_timer(TIMER_QUORUM, self.config.election_timeout[1])
        self.broadcast_append()
        self.maybe_commit()

    def _trace_state(self) -> None:
        data: dict[str, Any] = {"role": self.role, "term": self.term}
        if self.role == LEADER:
            span = range(self.commit + 1, self.last_index + 1)
            data.update(last_index=self.last_index, commit=self.commit,
                        hashes={str(i): self.hashes[i] for i in span},
                        terms={str(i): self.log[i][0] for i in span})
        self.ctx.trace("state", data=data)

    def _reset_election_timer(self) -> None:
        lo, hi = self.config.election_timeout
        self.ctx.set_timer(TIMER_ELECTION, self.ctx.rng.uniform(lo, hi))

    def _in_lease(self) -> bool:
        """Whether a leader is known to be alive: then vote requests are disruptions."""
        if self.role == LEADER:
            return True
        return self.leader is not None and self.ctx.now() - self.heard < self.config.election_timeout[0]

    def _abandon_pending(self) -> None:
        # The entries may still commit under the next leader: the outcome is unknown, not failed.
        for index in sorted(self.pending):
            self.ctx.reply(self.pending[index], {"type": "info", "error": "leadership_lost"})
        self.pending = {}

    # -- entry points --------------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if src not in self.peers or not well_formed(type, body):
            self.dropped += 1
            self.ctx.trace("drop", type=type, peer=src, data={"reason": "malformed"})
            return
        term = body["term"]
        if term > self.term:
            if type == MSG_VOTE and not body["pre"] and self.config.check_quorum and self._in_lease():
                return      # our leader is alive: a disruptive candidate gets no answer (thesis 4.2.3)
            pre_term = (type == MSG_VOTE and body["pre"]) or (
                type == MSG_VOTE_RESP and body["pre"] and body["granted"])
            if not pre_term:    # a pre-vote carries a term nobody has taken yet: never adopt it
                self.become_follower(term, src if type == MSG_APP else None)
        elif term < self.term:
            # Answer stale requests with our term so their sender catches up; drop stale answers.
            if type == MSG_APP:
                self._send_append_response(src, False, self.last_index + 1, None, body["prev_index"])
            elif type == MSG_VOTE:
                self.ctx.send(src, MSG_VOTE_RESP, {"term": self.term, "granted": False, "pre": body["pre"]})
            return
        if type == MSG_VOTE:
            self.handle_vote_request(src, body)
        else:
            self._step(src, type, body)

    def handle_timer(self, name: str) -> None:
        self._tick(name)

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        if self.role != LEADER:
            self.ctx.reply(client, {"type": "fail", "error": "not_leader", "leader": self.leader})
            return
        now = kv.answer_now(self.kv, op)
        if now is not None:         # invalid, or a retry of an op already applied
            self.ctx.reply(client, now)
            return
        flat = _encode_flat(op)
        if flat is None:
            self._append([[self.term, encode_command(op)]])
        else:
            self._append([[self.term, flat[0]]])
            self.proposed[len(self.log) - 1] = flat
        if self.commit_dirty:
            self._persist_commit_lazily()
        if self._bug_early_ack and op["f"] in ("write", "delete"):
            self.ctx.reply(client, kv.OK)       # the bug: appended here is not committed
        else:
            self.pending[len(self.log) - 1] = client
        self.broadcast_append()

    def handle_persisted(self) -> None:
        self.durable = self.last_index
        if self.role == LEADER and self.durable > self.commit:
            self.maybe_commit()

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "term": self.term, "leader": self.leader,
                "commit": self.commit, "last_index": self.last_index}

    # -- step and tick handlers, per role -----------------------------------------
    def _step_follower(self, src: str, type: str, body: dict[str, Any]) -> None:
        if type == MSG_APP:
            self.leader, self.heard = src, self.ctx.now()
            self._reset_election_timer()
            self.handle_append_entries(src, body)

    def _step_candidate(self, src: str, type: str, body: dict[str, Any]) -> None:
        if type == MSG_APP:
            # A leader of our term exists: it won this election.
            self.become_follower(self.term, src)
            self.handle_append_entries(src, body)
        elif type == MSG_VOTE_RESP:
            self.handle_vote_response(src, body)

    def _step_leader(self, src: str, type: str, body: dict[str, Any]) -> None:
        if type == MSG_APP_RESP:
            self.handle_append_response(src, body)

    def _tick_election(self, name: str) -> None:
        if name == TIMER_ELECTION:
            if self.config.pre_vote:
                self.become_pre_candidate()
            else:
                self.become_candidate()

    def _tick_candidate(self, name: str) -> None:
        if name == TIMER_VOTE_RETRY:
            # Figure 2: "if an RPC fails, retry": a lost request or answer should not cost a
            # whole election timeout.
            self.broadcast_vote_request(pre=self.role == PRE_CANDIDATE, retry=True)
        else:
            self._tick_election(name)

    def _tick_leader(self, name: str) -> None:
        if name == TIMER_HEARTBEAT:
            self._persist_commit_lazily()      # at most one commit-only write a heartbeat
            self.broadcast_heartbeat()
            self.ctx.set_timer(TIMER_HEARTBEAT, self.config.heartbeat)
        elif name == TIMER_QUORUM:
            self.maybe_step_down()

    # -- elections -------------------------------------------------------------------
    def broadcast_vote_request(self, pre: bool, retry: bool = False) -> None:
        body = {"term": self.term + 1 if pre else self.term, "last_index": self.last_index,
                "last_term": self.last_term, "pre": pre}
        for p in self.peers:
            if not retry or (p not in self.votes and p not in self.rejects):
                self.ctx.send(p, MSG_VOTE, body)
        self.ctx.set_timer(TIMER_VOTE_RETRY, self.config.heartbeat)

    def handle_vote_request(self, src: str, body: dict[str, Any]) -> None:
        up_to_date = self._bug_no_restriction or (
            (body["last_term"], body["last_index"]) >= (self.last_term, self.last_index))
        if body["pre"]:
            granted = body["term"] > self.term and up_to_date and not self._in_lease()
            self.ctx.send(src, MSG_VOTE_RESP, {"term": body["term"] if granted else self.term,
                                               "granted": granted, "pre": True})
            return
        # Same term as ours here: a higher one made us a follower in handle_message.
        granted = self.vote in (None, src) and up_to_date
        if granted:
            self.vote = src
            self._persist_hard()
            self._reset_election_timer()
        self.ctx.send(src, MSG_VOTE_RESP, {"term": self.term, "granted": granted, "pre": False})

    def handle_vote_response(self, src: str, body: dict[str, Any]) -> None:
        pre = self.role == PRE_CANDIDATE
        if body["pre"] != pre or (pre and body["granted"] and body["term"] != self.term + 1):
            return      # an answer to an earlier campaign
        (self.votes if body["granted"] else self.rejects).add(src)
        if len(self.votes) >= self.quorum:
            if pre:
                self.become_candidate()
            else:
                self.become_leader()
        elif len(self.rejects) >= self.quorum:
            self.become_follower(self.term, None)

    def maybe_step_down(self) -> None:
        """CheckQuorum: a leader that heard from no majority this round may be cut off."""
        active = len(self.recent_active) + 1
        self.recent_active = set()
        if active < self.quorum:
            self.become_follower(self.term, None)
        else:
            self.ctx.set_timer(TIMER_QUORUM, self.config.election_timeout[1])

    # -- replication: leader ----------------------------------------------------------
    def broadcast_append(self) -> None:
        # maybe_send_append written out: this runs for every client request.
        progress, n = self.progress, len(self.log)
        for p in self.peers:
            pr = progress[p]
            if not (pr.paused if pr.probing else pr.inflight >= MAX_INFLIGHT) and pr.next < n:
                self.send_append(p)

    def broadcast_heartbeat(self) -> None:
        # Unpause every follower: an append or its answer may have been lost.
        for p in self.peers:
            pr = self.progress[p]
            pr.paused, pr.inflight = False, 0
            self.send_append(p)

    def maybe_send_append(self, peer: str) -> None:
        pr = self.progress[peer]
        if pr.paused if pr.probing else pr.inflight >= MAX_INFLIGHT:
            return
        if pr.next < len(self.log):
            self.send_append(peer)

    def send_append(self, peer: str) -> None:
        pr = self.progress[peer]
        prev = pr.next - 1
        entries = self.log[pr.next:pr.next + self.config.max_append_entries]
        self.ctx.send(peer, MSG_APP, {"term": self.term, "prev_index": prev,
                                      "prev_term": self.log[prev][0], "entries": entries,
                                      "commit": self.commit})
        if pr.probing:
            pr.paused = True
        elif entries:
            # Optimistic: assume it lands; a rejection sends us back to probing.
            pr.next = prev + len(entries) + 1
            pr.inflight += 1

    def handle_append_response(self, src: str, body: dict[str, Any]) -> None:
        pr = self.progress[src]
        self.recent_active.add(src)
        if body["success"]:
            index = body["index"]
            if pr.inflight:
                pr.inflight -= 1
            pr.probing = pr.paused = False
            if pr.next <= index:
                pr.next = index + 1
            if index > pr.match:
                pr.match = index
                if index > self.commit:
                    self.maybe_commit()
            self.maybe_send_append(src)
            return
        prev = body["prev_index"]
        if (prev != pr.next - 1) if pr.probing else (prev <= pr.match):
            return      # stale: answers an append sent before we learnt better
        # Fast backtracking: skip the follower's whole conflicting term at once.
        nxt = body["index"]
        if body["conflict_term"] is not None:
            last_of_term = self._last_index_of_term(body["conflict_term"], prev)
            if last_of_term:
                nxt = last_of_term + 1
        pr.next = max(pr.match + 1, min(nxt, prev))
        pr.probing, pr.paused, pr.inflight = True, False, 0
        self.send_append(src)

    def _last_index_of_term(self, term: int, below: int) -> int:
        """The last index <= ``below`` whose entry has ``term``, or 0."""
        i = min(below, self.last_index)
        log = self.log
        while i > 0 and log[i][0] > term:
            i -= 1
        return i if i > 0 and log[i][0] == term else 0

    def own_match(self) -> int:
        """The leader's own vote in the quorum: its log as far as it is durable."""
        return self.durable

    def maybe_commit(self) -> None:
        # The quorum-th highest match, the leader's own durable log counted as one.
        matches = [pr.match for pr in self.progress.values()]
        matches.append(self.own_match())
        matches.sort(reverse=True)
        n = matches[self.quorum - 1]
        # Figure 8: only an entry of our own term commits by counting replicas.
        if n > self.commit and (self.log[n][0] == self.term or self._bug_commit_previous):
            self.commit_to(n)

    # -- replication: follower --------------------------------------------------------
    def handle_append_entries(self, src: str, body: dict[str, Any]) -> None:
        prev, entries = body["prev_index"], body["entries"]
        if self._bug_no_check:
            at = min(prev, self.last_index)    # trust the leader: splice after what we have
        elif prev > self.last_index:
            self._send_append_response(src, False, self.last_index + 1, None, prev)
            return
        elif self.log[prev][0] != body["prev_term"]:
            conflict = self.log[prev][0]
            first = prev
            while first > 1 and self.log[first - 1][0] == conflict:
                first -= 1
            self._send_append_response(src, False, first, conflict, prev)
            return
        else:
            at = prev
        # Skip entries we already hold; cut our log at the first one that conflicts.
        i, n, log = 0, len(entries), self.log
        while i < n:
            index = at + 1 + i
            if index >= len(log):
                break
            if log[index][0] != entries[i][0]:
                self._truncate(index - 1)
                break
            i += 1
        if i < n:
            self._append(entries[i:])
        match = at + n
        if body["commit"] > self.commit and match > self.commit:
            self.commit_to(min(body["commit"], match))
        if i < n:
            self._persist_commit_lazily()      # this handler writes the log anyway
        self._send_append_response(src, True, match, None, prev)

    def _send_append_response(self, dst: str, success: bool, index: int,
                              conflict_term: int | None, prev: int) -> None:
        self.ctx.send(dst, MSG_APP_RESP, {"term": self.term, "success": success, "index": index,
                                          "conflict_term": conflict_term, "prev_index": prev})

    # -- commit and apply -----------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        trace, log, hashes = self.ctx.trace, self.log, self.hashes
        for i in range(self.commit + 1, index + 1):
            trace("commit", data={"index": i, "term": log[i][0], "hash": hashes[i]})
        self.commit = index
        self.commit_dirty = True
        self._apply_committed()

    def _apply_committed(self, replay: bool = False) -> None:
        # Everything the loop touches is a local: it runs for every entry on every node.
        i, commit = self.applied, self.commit
        if i >= commit:
            return
        trace, reply, log, apply = self.ctx.trace, self.ctx.reply, self.log, self.kv.apply
        proposed, pending = self.proposed, self.pending
        while i < commit:
            i += 1
            self.applied = i
            term, encoded = log[i]
            if encoded is None:
                continue        # a leader's no-op
            mine = proposed.pop(i, None) if proposed else None
            command = mine[1] if mine is not None and mine[0] is encoded else _decode(encoded)
            if command is None:
                result: dict[str, Any] = {"type": "fail", "error": "bad_command"}
                f = key = None
            else:
                result = apply(command)
                f, key = command.get("f"), command.get("key")
            if replay:
                continue        # rebuilding after a restart: already traced and answered
            trace("apply", data={"index": i, "term": term, "f": f, "key": key})
            if pending:
                client = pending.pop(i, None)
                if client is not None:
                    reply(client, result)
