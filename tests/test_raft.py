"""The Raft core, section by section of the paper, on the deterministic in-memory net."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from raftnet import Net

from nodes.protocols import get
from nodes.protocols.core import ConfigValueError, build_config, describe_tunables
from nodes.protocols.raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    MAX_INFLIGHT,
    MSG_APP,
    MSG_APP_RESP,
    PRE_CANDIDATE,
    Raft,
    RaftConfig,
    chain_hash,
    well_formed,
)
from nodes.storage import MemoryStorage

pytestmark = pytest.mark.sim

HOLDS_ALL = {"election_safety": "holds", "log_matching": "holds", "leader_completeness": "holds",
             "state_machine_safety": "holds", "linearizable": "holds"}


def write(key: str, value: Any, seq: int, client: str = "c1") -> dict[str, Any]:
    return {"f": "write", "key": key, "value": value, "client": client, "seq": seq}


def read(key: str, seq: int, client: str = "c1") -> dict[str, Any]:
    return {"f": "read", "key": key, "client": client, "seq": seq}


def settle(net: Net) -> str:
    net.tick(2.0)
    return net.leader()


# -- configuration ----------------------------------------------------------------------------
def test_registry_and_defaults() -> None:
    assert get("raft") is Raft
    cfg = build_config(Raft, {})
    assert (cfg.election_timeout, cfg.heartbeat, cfg.max_append_entries) == ((0.15, 0.3), 0.05, 64)
    assert cfg.pre_vote is cfg.check_quorum is False
    assert Raft.default_checks[-1] == "linearizable"


def test_wan_preset_converts_yaml_values_and_explicit_keys_win() -> None:
    cfg = build_config(Raft, {"preset": "wan"})
    assert cfg.election_timeout == (1.0, 2.0) and cfg.heartbeat == 0.2
    cfg = build_config(Raft, {"preset": "wan", "heartbeat": "100ms", "pre_vote": True})
    assert cfg.heartbeat == 0.1 and cfg.pre_vote is True
    assert build_config(Raft, {"preset": "lan"}) == RaftConfig()


@pytest.mark.parametrize("raw, field", [
    ({"heartbeat": "300ms"}, "heartbeat"),            # not below the election timeout
    ({"max_append_entries": 0}, "max_append_entries"),
    ({"election_timeout": ["0ms", "10ms"]}, "election_timeout"),
    ({"pre_vote": "yes"}, "pre_vote"),
    ({"bugs": ["nope"]}, "bugs"),
])
def test_bad_config_names_its_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        build_config(Raft, raw)
    assert e.value.field == field


def test_every_tunable_documents_unit_effect_and_trade_off() -> None:
    for row in describe_tunables(Raft):
        assert row["unit"], row
        assert len(row["doc"]) > 60, row
    assert {r["name"]: r["unit"] for r in describe_tunables(Raft)} == {
        "bugs": "names", "election_timeout": "s-range", "heartbeat": "s", "pre_vote": "bool",
        "check_quorum": "bool", "max_append_entries": "count"}
    assert dataclasses.is_dataclass(RaftConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RaftConfig().heartbeat = 1.0      # type: ignore[misc]


# -- 5.2 leader election ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 5])
def test_one_leader_is_elected_and_everyone_follows_it(n: int) -> None:
    net = Net(n, seed=7)
    leader = settle(net)
    assert net.leaders() == [leader]
    for name in net.names:
        st = net.core(name).status()
        assert st["leader"] == leader and st["term"] == net.core(leader).term
        assert st["role"] == (LEADER if name == leader else FOLLOWER)
    assert net.verdicts() == HOLDS_ALL


def test_a_new_leader_is_elected_when_the_leader_is_isolated() -> None:
    net = Net(5, seed=3)
    old = settle(net)
    old_term = net.core(old).term
    net.isolate(old)
    net.tick(1.0)
    (new,) = [n for n in net.leaders() if n != old]
    assert net.core(new).term > old_term
    assert net.core(old).role == LEADER          # it cannot know yet
    net.recover()
    net.tick(0.2)
    assert net.leaders() == [new]
    assert net.core(old).status()["leader"] == new and net.core(old).term == net.core(new).term
    assert net.verdicts() == HOLDS_ALL


def test_split_vote_is_resolved_by_randomized_timeouts() -> None:
    net = Net(4, seed=11)
    net.cut("n1", "n4")
    net.cut("n2", "n3")
    net.fire("n1", "election")
    net.fire("n2", "election")                   # both in term 1, each with two of four votes
    net.deliver_all()
    assert net.leaders() == [] and net.core("n3").vote == "n1" and net.core("n4").vote == "n2"
    net.recover()
    leader = settle(net)
    assert net.core(leader).term >= 2 and net.leaders() == [leader]


def test_candidate_retries_vote_requests_that_were_lost() -> None:
    net = Net(3, seed=1)
    net.ignore("request_vote")
    net.fire("n1", "election")
    net.deliver_all()
    assert net.core("n1").role == CANDIDATE
    net.recover()
    net.tick(net.config.heartbeat + 0.001)       # the retry, well before another election timeout
    assert net.core("n1").role == LEADER and net.core("n1").term == 1


def test_votes_go_to_the_first_candidate_of_a_term_only() -> None:
    net = Net(3)
    net.fire("n1", "election")
    net.fire("n3", "election")
    net.cut("n3", "n2")
    net.deliver_all()
    assert net.core("n2").vote == "n1"
    net.recover()
    net.fire("n3", "vote_retry")                  # n3 asks n2 again in the same term
    net.deliver_all()
    assert net.core("n2").vote == "n1" and net.core("n3").role != LEADER


# -- 5.3 log replication -----------------------------------------------------------------------
def test_writes_commit_on_every_node_and_logs_match() -> None:
    net = Net(5, seed=2)
    leader = settle(net)
    for seq in range(20):
        net.request(leader, write("x", seq, seq))
    net.deliver_all()
    assert net.replies_to("c1") == [{"type": "ok"}] * 20
    net.heartbeat(leader)
    tips = {(net.core(n).commit, net.core(n).hashes[-1]) for n in net.names}
    assert len(tips) == 1
    assert [c["value"] for c in net.commits(leader) if c] == list(range(20))
    assert net.verdicts() == HOLDS_ALL


def test_chain_hash_is_the_documented_blake2b_over_canonical_json() -> None:
    import hashlib
    net = Net(3)
    net.elect("n1")
    net.request("n1", {"f": "cas", "key": "k", "value": [None, {"b": 1, "a": 2}], "client": "c", "seq": 1})
    net.deliver_all()
    core = net.core("n1")
    h = ""
    for term, command in core.log[1:]:
        data = json.dumps([h, term, None if command is None else json.loads(command)],
                          sort_keys=True, separators=(",", ":"))
        h = hashlib.blake2b(data.encode(), digest_size=8).hexdigest()
    assert h == core.hashes[-1] == chain_hash(core.hashes[-2], core.log[-1][0], core.log[-1][1])
    commits = [e["data"] for e in net.trace if e["ev"] == "commit" and e["node"] == "n1"]
    assert commits[-1] == {"index": 2, "term": 1, "hash": h}


def test_trace_events_follow_docs_trace_md() -> None:
    net = Net(3)
    net.elect("n1")
    net.request("n1", write("x", 1, 1))
    net.deliver_all()
    net.heartbeat("n1")
    evs = [e for e in net.trace if e["ev"] in ("state", "commit", "apply")]
    for e in evs:
        assert {"ts", "node", "lc", "ev", "data"} <= set(e)
    leader = next(e for e in evs if e["ev"] == "state" and e["data"]["role"] == LEADER)
    assert set(leader["data"]) == {"role", "term", "last_index", "commit", "hashes", "terms"}
    applies = [e["data"] for e in evs if e["ev"] == "apply" and e["node"] == "n2"]
    assert applies == [{"index": 2, "term": 1, "f": "write", "key": "x"}]   # no-ops are not applied
    commits = [e["data"]["index"] for e in evs if e["ev"] == "commit" and e["node"] == "n3"]
    assert commits == [1, 2]


def test_followers_learn_the_commit_index_from_the_next_append() -> None:
    net = Net(3)
    net.elect("n1")
    net.request("n1", write("x", 1, 1))
    net.deliver_all()
    assert net.core("n1").commit == 2 and net.core("n2").commit == 1
    net.heartbeat("n1")
    assert net.core("n2").commit == net.core("n3").commit == 2
    assert net.core("n2").kv.data == {"x": 1}


def test_divergent_follower_is_repaired_with_one_rejection_per_term() -> None:
    """Figure 7: a follower full of uncommitted entries from an old term is overwritten,
    and fast backtracking skips that whole term in one round trip, not one per entry."""
    net = Net(3, seed=5)
    net.elect("n1")
    for seq in range(10):
        net.request("n1", write("base", seq, seq))
    net.deliver_all()
    net.heartbeat("n1")                                 # indexes 1..11 everywhere
    net.isolate("n1")
    for seq in range(40):                              # n1 keeps accepting: 12..51, never committed
        net.request("n1", write("stale", seq, seq, client="old"))
    net.deliver_all()
    net.recover()
    net.isolate("n1")
    net.elect("n2", attempts=2)                         # term 2: 12..17 on n2 and n3
    for seq in range(5):
        net.request("n2", write("fresh", seq, seq, client="new"))
    net.deliver_all()
    net.crash("n2")
    net.restart("n2")
    net.elect("n2")                                     # term 3: n2 starts with next = 18 for n1
    n1 = net.core("n1")
    assert n1.last_index == 51 and n1.commit == 11 and net.core("n2").last_index == 18
    net.recover()
    sent = []
    orig = net._send

    def spy(src: str, dst: str, type: str, body: dict[str, Any]) -> None:
        sent.append((src, dst, type, body))
        orig(src, dst, type, body)

    net._send = spy  # type: ignore[method-assign]
    net.heartbeat("n2")
    net.heartbeat("n2")
    rejects = [b for s, d, t, b in sent if s == "n1" and t == MSG_APP_RESP and not b["success"]]
    assert len(rejects) == 1, rejects
    assert rejects[0]["conflict_term"] == 1 and rejects[0]["prev_index"] == 17
    assert n1.hashes == net.core("n2").hashes and n1.commit == net.core("n2").commit == 18
    assert net.storage["n1"].log_read("log") == n1.log[1:]        # truncated, not left behind
    assert [c["key"] for c in net.commits("n1") if c][10:] == ["fresh"] * 5
    assert net.verdicts() == HOLDS_ALL


def test_follower_missing_entries_is_probed_back_with_the_length_hint() -> None:
    net = Net(3, seed=5)
    net.elect("n1")
    net.heartbeat("n1")
    net.isolate("n3")
    for seq in range(100):
        net.request("n1", write("x", seq, seq))
    net.deliver_all()
    net.recover()
    for _ in range(4):                                 # 100 entries, 64 a message
        net.heartbeat("n1")
    assert net.core("n3").hashes == net.core("n1").hashes
    assert net.core("n3").commit == net.core("n1").commit == 101


def test_pending_requests_are_batched_into_few_appends() -> None:
    net = Net(3, config={"max_append_entries": 16})
    net.elect("n1")
    net.heartbeat("n1")
    before = net.delivered
    for seq in range(64):
        net.request("n1", write("x", seq, seq))
    net.deliver_all()
    messages = net.delivered - before
    # Per follower: MAX_INFLIGHT single-entry appends go out at once, the other 62 requests
    # wait and leave 16 to a message; each append is answered. One RPC a request would be 256.
    per_follower = MAX_INFLIGHT + -(-(64 - MAX_INFLIGHT) // 16)
    assert messages == 2 * 2 * per_follower, messages
    assert len(net.replies_to("c1")) == 64 and net.core("n1").commit == 65


def test_append_writes_only_new_entries_to_storage() -> None:
    calls: list[tuple[str, int]] = []

    class Spy(MemoryStorage):
        def log_append(self, name: str, entries: list[Any]) -> None:
            calls.append((name, len(entries)))
            super().log_append(name, entries)

    net = Net(3)
    net.storage["n2"] = Spy()
    net.crash("n2")
    net.restart("n2")
    net.elect("n1")
    for seq in range(10):
        net.request("n1", write("x", seq, seq))
        net.deliver_all()
    assert calls and all(name == "log" and k == 1 for name, k in calls)
    assert sum(k for _, k in calls) == net.core("n2").last_index == 11


def test_commit_index_rides_along_with_other_writes() -> None:
    """Like etcd's HardState: the commit index is written, but never on its own on the path of
    an answer; a restart then recovers it (or a little less, and learns the rest again)."""
    net = Net(3)
    net.elect("n1")
    net.heartbeat("n1")
    leader = net.storage["n1"]
    net.request("n1", write("x", 1, 1))
    writes = leader.writes
    net.deliver_all()                                  # acks arrive, index 2 commits, n1 replies
    assert net.replies_to("c1") == [{"type": "ok"}]
    assert leader.writes == writes                     # no write of its own for the commit
    assert leader.get("hard")["commit"] == 1
    net.request("n1", write("x", 2, 2))                # the next append carries it
    assert leader.get("hard")["commit"] == 2
    net.deliver_all()
    net.heartbeat("n1")                                # and so does a heartbeat
    assert leader.get("hard")["commit"] == 3
    assert net.storage["n2"].get("hard")["commit"] == 2   # followers: with their next append
    net.crash("n2")
    net.restart("n2")
    net.heartbeat("n1")
    assert net.core("n2").commit == 3 and net.core("n2").kv.data == {"x": 2}
    assert net.verdicts() == HOLDS_ALL


def test_malformed_messages_are_dropped_and_counted() -> None:
    net = Net(3)
    net.elect("n1")
    core = net.core("n2")
    before = core.status()
    for body in ({"term": "x"}, {"term": 1, "prev_index": -1, "prev_term": 0, "commit": 0, "entries": []},
                 {"term": 1, "prev_index": 0, "prev_term": 0, "commit": 0, "entries": [[1]]},
                 {"term": 1, "prev_index": 0, "prev_term": 0, "commit": 0, "entries": [["1", None]]},
                 [1, 2]):
        core.handle_message("n1", MSG_APP, body)   # type: ignore[arg-type]
    core.handle_message("mallory", MSG_APP, {"term": 9, "prev_index": 0, "prev_term": 0, "commit": 0,
                                             "entries": []})
    assert core.dropped == 6 and core.status() == before
    drops = [e for e in net.trace if e["ev"] == "drop" and e["node"] == "n2"]
    assert len(drops) == 6 and drops[0]["data"] == {"reason": "malformed"}
    assert well_formed(MSG_APP, {"term": 1, "prev_index": 0, "prev_term": 0, "commit": 0,
                                 "entries": [[1, None], (1, "{}")]})
    assert not well_formed("hello", {"term": 1})


# -- 5.4 safety ----------------------------------------------------------------------------------
def test_election_restriction_denies_votes_to_a_stale_log() -> None:
    net = Net(3)
    net.elect("n1")
    net.heartbeat("n1")
    net.isolate("n3")
    net.request("n1", write("x", 1, 1))
    net.deliver_all()
    net.crash("n1")
    net.recover()
    for _ in range(3):
        net.campaign("n3")
        assert net.core("n3").role == CANDIDATE
    assert net.core("n2").vote is None            # asked three times, never granted
    net.campaign("n2")
    assert net.core("n2").role == LEADER
    net.heartbeat("n2")
    assert {"key": "x", "value": 1} .items() <= net.commits("n3")[1].items()


def test_figure_8_commit_waits_for_an_entry_of_the_current_term() -> None:
    net = Net(3, config={"max_append_entries": 1})
    net.elect("n1")
    net.heartbeat("n1")
    net.isolate("n1")
    net.request("n1", write("x", 1, 1))               # index 2, term 1, on n1 alone
    net.deliver_all()
    net.crash("n1")
    net.restart("n1")
    net.recover()
    net.isolate("n3")
    n1 = net.core("n1")
    net.fire("n1", "election")                        # term 2 with n2's vote
    net.deliver_until(lambda: n1.role == LEADER and n1.progress["n2"].match >= 2)
    assert n1.commit == 1                              # index 2 is on a majority, yet not committed
    net.deliver_all()                                  # then the term-2 no-op reaches n2
    assert n1.commit == 3
    assert [e["data"]["index"] for e in net.trace
            if e["ev"] == "commit" and e["node"] == "n1"] == [1, 2, 3]


def test_restart_recovers_term_vote_log_commit_and_data() -> None:
    net = Net(3)
    net.elect("n1")
    for seq in range(5):
        net.request("n1", write(f"k{seq}", seq, seq))
    net.deliver_all()
    net.heartbeat("n1")
    net.isolate("n2")
    net.fire("n2", "election")                         # n2 votes for itself in term 2
    before = net.core("n2")
    snapshot = (before.term, before.vote, before.hashes, before.commit, dict(before.kv.data))
    net.crash("n2")
    net.restart("n2")
    after = net.core("n2")
    assert after is not before
    assert (after.term, after.vote, after.hashes, after.commit, after.kv.data) == snapshot
    assert snapshot[:2] == (2, "n2") and snapshot[3] == 6
    assert after.role == FOLLOWER
    # The restarted node still refuses a second vote in term 2.
    net.recover()
    net.fire("n3", "election")                         # n3 asks for votes in term 2
    net.deliver_all()
    assert net.core("n3").term == 2 and after.term == 2 and after.vote == "n2"
    assert net.core("n3").role == LEADER               # with n1's vote, not n2's


def test_restart_of_the_whole_cluster_keeps_committed_data() -> None:
    net = Net(3)
    net.elect("n1")
    net.request("n1", write("x", "kept", 1))
    net.deliver_all()
    for name in net.names:
        net.crash(name)
    for name in net.names:
        net.restart(name)
    leader = settle(net)
    net.request(leader, read("x", 2))
    net.deliver_all()
    assert net.replies_to("c1")[-1] == {"type": "ok", "value": "kept"}
    assert net.verdicts() == HOLDS_ALL


# -- clients ---------------------------------------------------------------------------------------
def test_non_leaders_redirect_with_the_leader_they_know() -> None:
    net = Net(3)
    net.request("n2", write("x", 1, 1))
    assert net.replies_to("c1") == [{"type": "fail", "error": "not_leader", "leader": None}]
    net.elect("n1")
    net.request("n2", write("x", 1, 1), client="c2")
    assert net.replies_to("c2") == [{"type": "fail", "error": "not_leader", "leader": "n1"}]


def test_invalid_ops_fail_without_entering_the_log() -> None:
    net = Net(3)
    net.elect("n1")
    last = net.core("n1").last_index
    net.request("n1", {"f": "incr", "key": "x"})
    assert net.replies_to("c1")[0]["type"] == "fail"
    assert net.core("n1").last_index == last


def test_retried_request_is_applied_once_across_leaders() -> None:
    net = Net(3)
    net.elect("n1")
    net.request("n1", write("x", 0, 1))
    net.deliver_all()
    cas = {"f": "cas", "key": "x", "value": [0, 1], "client": "c1", "seq": 2}
    net.request("n1", cas)
    net.deliver_until(lambda: net.core("n2").last_index == 3)    # replicated; the answer is lost:
    net.crash("n1")                                              # n1 dies before it replies
    assert len(net.replies_to("c1")) == 1
    net.elect("n2")
    net.request("n2", write("x", 0, 1, client="c2"))             # someone resets x meanwhile
    net.request("n2", cas)                                        # the client retries at n2
    net.deliver_all()
    assert net.replies_to("c1")[-1] == {"type": "ok"}            # answered from the table
    net.request("n2", read("x", 3))
    net.deliver_all()
    assert net.replies_to("c1")[-1] == {"type": "ok", "value": 0}  # the cas did not run twice
    net.request("n2", cas)                                        # a late retry after commit:
    assert net.replies_to("c1")[-1] == {"type": "ok"}            # answered at once, no new entry


def test_deposed_leader_never_serves_a_stale_read() -> None:
    net = Net(5, seed=4)
    old = settle(net)
    net.request(old, write("x", 1, 1))
    net.deliver_all()
    net.isolate(old)
    net.tick(1.0)
    new = net.leader()
    assert new != old and net.core(old).role == LEADER
    net.request(new, write("x", 2, 2))
    net.deliver_all()
    assert net.replies_to("c1")[-1] == {"type": "ok"}
    net.request(old, read("x", 1, client="r"), client="reader")
    net.tick(1.0)
    assert net.replies_to("reader") == []                       # no answer, certainly not x=1
    net.recover()
    net.tick(0.5)
    assert net.replies_to("reader") == [{"type": "info", "error": "leadership_lost"}]
    net.request(new, read("x", 2, client="r"), client="reader")
    net.deliver_all()
    assert net.replies_to("reader")[-1] == {"type": "ok", "value": 2}


def test_leader_that_steps_down_answers_pending_ops_info_never_fail() -> None:
    net = Net(3)
    net.elect("n1")
    net.isolate("n1")
    net.request("n1", write("x", 1, 1))
    net.deliver_all()
    net.recover()
    net.isolate("n1")
    net.cut("n1", "n2")
    net.elect("n2", attempts=2)
    net.recover()
    net.heartbeat("n2")
    assert net.replies_to("c1") == [{"type": "info", "error": "leadership_lost"}]


# -- thesis extensions: pre-vote and check-quorum ---------------------------------------------------
def test_pre_vote_keeps_a_partitioned_node_from_raising_its_term() -> None:
    for pre_vote in (False, True):
        net = Net(3, seed=8, config={"pre_vote": pre_vote})
        leader = settle(net)
        term = net.core(leader).term
        lonely = next(n for n in net.names if n != leader)
        net.isolate(lonely)
        net.tick(2.0)
        if pre_vote:
            assert net.core(lonely).term == term and net.core(lonely).role == PRE_CANDIDATE
        else:
            assert net.core(lonely).term > term + 3
        net.recover()
        net.tick(1.0)
        # Without pre-vote the returning node's term deposes the healthy leader.
        assert (net.core(leader).role == LEADER and net.core(leader).term == term) is pre_vote
        assert net.verdicts() == HOLDS_ALL


def test_a_pre_vote_changes_neither_term_nor_vote_of_whoever_answers() -> None:
    net = Net(3, config={"pre_vote": True})
    net.fire("n1", "election")
    assert net.core("n1").role == PRE_CANDIDATE and net.core("n1").term == 0
    net.step()                                       # n1's pre-vote request reaches n2
    n2 = net.core("n2")
    assert (n2.term, n2.vote) == (0, None)
    assert net.storage["n2"].get("hard") is None     # nothing was written either
    net.deliver_all()
    assert net.core("n1").role == LEADER and net.core("n1").term == 1   # then one real election


def test_status_reports_role_term_leader_commit_and_last_index() -> None:
    net = Net(3)
    net.elect("n2")
    net.heartbeat("n2")
    assert net.core("n1").status() == {"role": FOLLOWER, "term": 1, "leader": "n2", "commit": 1,
                                       "last_index": 1}
    assert net.core("n2").status()["role"] == LEADER


def test_pre_vote_still_elects_after_the_leader_dies() -> None:
    net = Net(3, seed=2, config={"pre_vote": True})
    old = settle(net)
    term = net.core(old).term
    net.crash(old)
    leader = settle(net)
    assert leader != old and net.core(leader).term == term + 1      # one real election only


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    for check_quorum in (False, True):
        net = Net(3, seed=9, config={"check_quorum": check_quorum})
        leader = settle(net)
        net.isolate(leader)
        net.tick(1.0)
        assert (net.core(leader).role != LEADER) is check_quorum
        net.request(leader, write("x", 1, 1))
        reply = net.replies_to("c1")
        assert (reply == [{"type": "fail", "error": "not_leader", "leader": None}]) is check_quorum


def test_check_quorum_followers_ignore_a_disruptive_candidate() -> None:
    net = Net(3, seed=9, config={"check_quorum": True})
    leader = settle(net)
    term = net.core(leader).term
    other = [n for n in net.names if n != leader]
    net.cut(other[0], leader)
    net.fire(other[0], "election")                 # it has no leader's heartbeat on its side...
    net.deliver_all()
    # ...but the follower it asks does, so the vote request is ignored and the leader stays.
    assert net.core(other[1]).term == term and net.core(leader).role == LEADER


# -- randomized schedules -----------------------------------------------------------------------------
def random_schedule(seed: int) -> tuple[Net, dict[str, dict[str, Any]]]:
    """Partitions, crashes and restarts under load; returns the net and reply address -> op."""
    rng = random.Random(seed)
    net = Net(5, seed=seed, delay=0.002, jitter=0.004, loss=0.02,
              config={"pre_vote": rng.random() < 0.3, "check_quorum": rng.random() < 0.3})
    seq = 0
    ops: dict[str, dict[str, Any]] = {}
    for _ in range(80):
        x = rng.random()
        if x < 0.06:
            net.recover()
            order = rng.sample(net.names, 5)
            net.partition(order[:2], order[2:])
        elif x < 0.1:
            net.recover()
            net.isolate(rng.choice(net.names))
        elif x < 0.14:
            net.recover()
        elif x < 0.17 and len(net.up()) > 2:
            net.crash(rng.choice(net.up()))
        elif x < 0.27:
            down = [n for n in net.names if net.cores[n] is None]
            if down:
                net.restart(rng.choice(down))
        for _ in range(rng.randint(0, 4)):
            seq += 1
            op = rng.choice([write("x", seq, seq, f"c{seq % 3}"), read("x", seq, f"c{seq % 3}"),
                             {"f": "cas", "key": "x", "value": [seq - 1, seq], "client": "c9", "seq": seq}])
            ops[f"r{seq}"] = op
            net.request(rng.choice(net.up()), op, client=f"r{seq}")
        net.tick(0.05)
    net.recover()
    for name in net.names:
        if net.cores[name] is None:
            net.restart(name)
    net.tick(2.0)
    return net, ops


@pytest.mark.parametrize("seed", range(12))
def test_random_faults_keep_every_property(seed: int) -> None:
    net, ops = random_schedule(seed)
    assert net.verdicts() == HOLDS_ALL
    leader = net.leader()
    commit = net.core(leader).commit
    assert all(net.core(n).hashes[commit] == net.core(leader).hashes[commit] for n in net.names)
    committed = {(c["client"], c["seq"]) for c in net.commits(leader) if c}
    answered = 0
    for _, address, result in net.replies:
        op = ops[address]
        key = (op["client"], op["seq"])
        if result["type"] == "ok" or result.get("error") == "cas_mismatch":
            assert key in committed, (address, result)        # an answer means it is in the log
            answered += 1
        elif result.get("error") == "not_leader":
            assert key not in committed, (address, result)    # fail means it never happened
        else:
            assert result == {"type": "info", "error": "leadership_lost"}
    assert answered > 5


def test_the_same_seed_gives_the_same_trace() -> None:
    first, second = random_schedule(3)[0].trace, random_schedule(3)[0].trace
    assert first == second
    assert first != random_schedule(4)[0].trace
