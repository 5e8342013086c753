"""The PBFT core, section by section of the paper, on the deterministic in-memory net."""

from __future__ import annotations

import pytest
from pbftnet import Net

from lab.clientrule import Targets
from nodes.protocols import get
from nodes.protocols import pbft_msgs as m
from nodes.protocols.core import ConfigValueError, build_config
from nodes.protocols.pbft import PBFT
from nodes.signing import request_bytes

pytestmark = pytest.mark.sim

FAST = {"request_timeout": "200ms", "view_change_timeout": "200ms", "fetch_timeout": "20ms"}


def ok(net: Net, f: str, key: str, value=None, seconds: float = 0.5):
    res = net.run(net.op(f, key, value), seconds)
    assert res is not None and res["type"] == "ok", (res, net.answers(f"c1#{net.client_seq}"))
    return res


# -- configuration and the client rule -------------------------------------------------------------
def test_registry_quorums_and_the_client_rule() -> None:
    assert get("pbft") is PBFT
    cfg = build_config(PBFT, {})
    for n, f, quorum, prepared in ((4, 1, 3, 2), (7, 2, 5, 4), (5, 1, 4, 3), (1, 0, 1, 0)):
        core = Net(n=n).core("n1")
        assert (core.f, core.quorum, core.prepared_need) == (f, quorum, prepared)
        rule = PBFT.client_rule(cfg, [f"n{i}" for i in range(1, n + 1)])
        assert (rule.replies, rule.broadcast, rule.sign) == (f + 1, True, True)
    bug = build_config(PBFT, {"bugs": ["client_accepts_first_reply"]})
    assert PBFT.client_rule(bug, ["n1", "n2", "n3", "n4"]).replies == 1
    assert Net(n=7, config={"bugs": ["prepared_with_f_plus_1"]}).core("n1").prepared_need == 3
    with pytest.raises(ConfigValueError, match="log_window"):
        build_config(PBFT, {"checkpoint_interval": 8, "log_window": 8})
    assert set(PBFT.behaviours) >= {"silent", "equivocate", "forge", "wrong_digest", "replay",
                                    "lie_in_view_change"}


# -- normal case -----------------------------------------------------------------------------------
def test_normal_case_three_phases_and_f_plus_1_matching_replies() -> None:
    net = Net()
    assert ok(net, "write", "x", 1) == {"type": "ok", "primary": "n1"}
    assert sorted(net.answers("c1#1")) == ["n1", "n2", "n3", "n4"]
    digests = {node: net.commits(node).get(1) for node in net.names}
    assert len(set(digests.values())) == 1 and None not in digests.values()
    assert ok(net, "read", "x") == {"type": "ok", "value": 1, "primary": "n1"}
    assert all(net.core(n).last_exec == 2 for n in net.names)
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


def test_requests_arriving_while_a_batch_is_in_flight_leave_together() -> None:
    """With nothing in flight a request leaves at once; with a batch in flight, a partial batch
    waits for the zero-delay propose timer (a runtime fires it after every handler due), so
    requests that come one by one meanwhile share one pre-prepare instead of one each."""
    net = Net(config={"pipeline": 4})
    first = net.submit(net.op("write", "x", 0), to=["n1"])
    assert net.core("n1").next_seq == 2                  # proposed alone, at once
    later = [net.submit(net.op("write", "x", i), to=["n1"]) for i in (1, 2, 3)]
    assert net.core("n1").next_seq == 2 and len(net.core("n1").queue) == 3
    net.tick(0.0)                                        # the timer, due now: one batch of three
    assert net.core("n1").next_seq == 3 and not net.core("n1").queue
    net.tick(0.5)
    sizes = [e["data"]["size"] for e in net.trace if e["ev"] == "commit" and e["node"] == "n1"]
    assert sizes == [1, 3]
    assert all(net.answers(h).get("n1") == {"type": "ok", "primary": "n1"} for h in (first, *later))


def test_a_full_batch_leaves_at_once_while_others_are_in_flight() -> None:
    net = Net(config={"batch_size": 2})
    net.submit(net.op("write", "x", 0), to=["n1"])
    net.submit(net.op("write", "x", 1), to=["n1"])
    assert net.core("n1").next_seq == 2                   # the second waits: a partial batch
    net.submit(net.op("write", "x", 2), to=["n1"])
    assert net.core("n1").next_seq == 3 and not net.core("n1").queue   # full: no wait


def test_a_retry_is_answered_from_the_table_not_executed_twice() -> None:
    net = Net()
    op = net.op("write", "x", 1)
    net.run(op)
    net.submit(op)                  # the client heard nothing and sends it again
    net.tick(0.2)
    assert all(net.core(n).last_exec == 1 for n in net.names)
    assert len([r for node, c, r in net.replies if c == "c1#1"]) == 8


def test_client_requests_must_carry_the_clients_signature() -> None:
    net = Net()
    unsigned = {"f": "write", "key": "x", "value": 1, "client": "c9", "seq": 1}
    net.submit(unsigned)
    forged = {**unsigned, "seq": 2, "sig": net.core("n1").keys.sign(b"anything")}
    net.submit(forged)
    net.tick(0.2)
    assert net.answers("c9#1")["n2"] == {"type": "fail", "error": "bad_signature", "primary": "n1"}
    assert net.answers("c9#2")["n3"] == {"type": "fail", "error": "bad_signature", "primary": "n1"}
    assert all(net.core(n).last_exec == 0 for n in net.names)


def test_a_primary_cannot_invent_client_operations() -> None:
    net = Net()
    primary = net.core("n1")
    op = {"f": "write", "key": "x", "value": "invented", "client": "c1", "seq": 1}
    op["sig"] = primary.keys.sign(request_bytes(op))       # the primary's key, not the clients'
    d = m.digest_of([op])
    body = {**primary.vote(m.PRE_PREPARE, 0, 1, d), "batch": [op]}
    for backup in ("n2", "n3", "n4"):
        net.core(backup).handle_message("n1", m.PRE_PREPARE, body)
    net.tick(0.2)
    assert all(net.drops(b) == {"bad_request": 1} for b in ("n2", "n3", "n4"))
    assert all(net.core(n).kv.data == {} for n in net.names)


def test_bad_signatures_and_malformed_bodies_are_dropped_counted_and_traced() -> None:
    net = Net()
    n2 = net.core("n2")
    good = net.core("n3").vote(m.PREPARE, 0, 1, m.NULL_DIGEST)
    n2.handle_message("n3", m.PREPARE, {**good, "sig": bytes(64)})
    n2.handle_message("n3", m.PREPARE, {**good, "i": "n4"})           # claims another sender
    n2.handle_message("n3", m.PREPARE, {"v": "x"})
    n2.handle_message("n3", m.COMMIT, {**good, "i": "nobody"})
    assert n2.dropped == {"bad_signature": 2, "malformed": 2}
    drops = [e["data"]["reason"] for e in net.trace if e["ev"] == "drop" and e["node"] == "n2"]
    assert drops == ["bad_signature", "bad_signature", "malformed", "malformed"]
    ok(net, "write", "x", 1)             # and the replica works on


def test_watermarks_bound_the_sequence_numbers_a_primary_may_use() -> None:
    net = Net(config={"checkpoint_interval": 4, "log_window": 8})
    primary = net.core("n1")
    batch: list = []
    for n in (9, 100):
        body = {**primary.vote(m.PRE_PREPARE, 0, n, m.digest_of(batch)), "batch": batch}
        net.core("n2").handle_message("n1", m.PRE_PREPARE, body)
    assert net.drops("n2") == {"watermark": 2}
    for i in range(4):
        ok(net, "write", "x", i)
    assert net.core("n2").h == 4
    body = {**primary.vote(m.PRE_PREPARE, 0, 3, m.digest_of(batch)), "batch": batch}
    net.core("n2").handle_message("n1", m.PRE_PREPARE, body)
    assert net.drops("n2") == {"watermark": 3}


# -- checkpoints and catching up --------------------------------------------------------------------
def test_checkpoints_become_stable_with_2f_plus_1_and_the_log_is_collected() -> None:
    net = Net(config={"checkpoint_interval": 4, "log_window": 8})
    for i in range(22):
        ok(net, "write", f"k{i % 3}", i, seconds=0.05)
    for n in net.names:
        core = net.core(n)
        assert core.h == 20 and core.last_exec == 22
        assert len(core.stable_proof) >= 3 and all(k > 20 for k in core.slots)
        assert set(core.ckpt_votes) <= {24} and set(core.own_ckpt) == {20}
    stable = [e for e in net.trace if e["ev"] == "log" and e["data"].get("msg") == "stable checkpoint"]
    assert len(stable) == 5 * 4


def test_a_replica_that_fell_behind_a_stable_checkpoint_gets_the_state() -> None:
    net = Net(config={"checkpoint_interval": 4, "log_window": 8, **FAST})
    net.isolate("n4")
    for i in range(10):
        ok(net, "write", "x", i, seconds=0.05)
    assert net.core("n4").last_exec == 0
    net.recover()
    ok(net, "write", "x", 10)
    net.tick(0.5)
    n4 = net.core("n4")
    # Cut off with client requests waiting, n4 moved on to views nobody else is in; it takes
    # no part in view 0 but still catches up on what view 0 executes.
    assert n4.view > 0 and not n4.active
    assert n4.last_exec == 11 and n4.kv.data == net.core("n1").kv.data == {"x": 10}
    transfers = [e for e in net.trace if e["ev"] == "log" and e["data"].get("msg") == "state transfer"]
    assert transfers and transfers[0]["node"] == "n4"


def test_a_state_that_does_not_match_the_certified_digest_is_refused() -> None:
    net = Net(config={"checkpoint_interval": 4, "log_window": 8})
    for i in range(4):
        ok(net, "write", "x", i, seconds=0.05)
    n1, fresh = net.core("n1"), Net(config={"checkpoint_interval": 4, "log_window": 8}).core("n4")
    fresh.keys = net.core("n4").keys
    forged = m.pack([{"x": "forged"}, {}, {}])
    body = n1.sign(m.STATE, {"n": n1.h, "d": n1.stable_d, "state": forged, "C": n1.stable_proof})
    fresh.handle_message("n1", m.STATE, body)
    assert fresh.dropped == {"bad_state": 1} and fresh.last_exec == 0
    body = n1.sign(m.STATE, {"n": n1.h, "d": n1.stable_d, "state": n1.stable_state, "C": n1.stable_proof})
    fresh.handle_message("n1", m.STATE, body)
    assert fresh.last_exec == 4 and fresh.kv.data == {"x": 3}


def test_a_replica_that_missed_commits_fetches_committed_certificates() -> None:
    net = Net(config=FAST)
    net.isolate("n4")
    for i in range(3):
        ok(net, "write", "x", i, seconds=0.05)
    net.recover()
    ok(net, "write", "y", 1)
    net.tick(0.3)
    assert net.core("n4").last_exec == 4
    assert net.commits("n4") == net.commits("n1")


# -- view change --------------------------------------------------------------------------------------
def test_primary_crash_view_change_nothing_committed_is_lost() -> None:
    net = Net(config=FAST)
    ok(net, "write", "x", 1)
    net.crash("n1")
    assert ok(net, "write", "x", 2, seconds=1.0) == {"type": "ok", "primary": "n2"}
    assert all(net.core(n).view == 1 and net.core(n).active for n in net.up())
    assert net.core("n2").status()["role"] == "primary"
    assert ok(net, "read", "x") == {"type": "ok", "value": 2, "primary": "n2"}
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


def test_a_prepared_request_is_reproposed_at_its_seq_in_the_new_view() -> None:
    net = Net(config=FAST)
    net.ignore(m.COMMIT)
    handle = net.submit(net.op("write", "x", 1))
    net.deliver_all()
    assert all(net.core(n).slots[1].cert is not None for n in ("n2", "n3", "n4"))
    net.crash("n1")
    net.recover()
    net.tick(1.0)
    assert net.accepted(handle) == {"type": "ok", "primary": "n2"}
    nv = [e["data"]["new_view"] for e in net.trace if e["ev"] == "state" and "new_view" in e["data"]]
    assert nv and nv[0]["O"]["1"] == net.commits("n2")[1] != m.NULL_DIGEST


def test_f_plus_1_view_changes_make_a_replica_join() -> None:
    net = Net(config=FAST)
    for n in ("n2", "n3"):
        net.core(n).start_view_change(1)
    net.deliver_all()
    assert net.core("n4").view == 1
    assert all(net.core(n).active for n in net.names)        # and n2's NEW-VIEW went out


def view_change(net: Net, *nodes: str) -> None:
    """The backups' request timers run out together (a primary that stopped ordering)."""
    for n in nodes:
        net.core(n).start_view_change(net.core(n).view + 1)
    net.tick(0.1)


def test_a_view_change_with_made_up_certificates_is_refused() -> None:
    net = Net(config=FAST, byzantine={"n3": ["lie_in_view_change"]})
    ok(net, "write", "x", 1)
    view_change(net, "n2", "n3", "n4")
    assert all(net.drops(n).get("bad_view_change") == 1 for n in ("n1", "n2", "n4"))
    assert all(net.core(n).view == 1 and net.core(n).active for n in ("n1", "n2", "n4"))
    assert ok(net, "write", "x", 2) == {"type": "ok", "primary": "n2"}


def test_a_new_view_that_its_view_changes_do_not_imply_is_refused() -> None:
    net = Net(config=FAST, byzantine={"n2": ["lie_in_view_change"]})
    ok(net, "write", "x", 1)
    view_change(net, "n1", "n3", "n4")
    assert all(net.drops(n).get("new_view_mismatch", 0) >= 1 for n in ("n1", "n3", "n4"))
    net.tick(0.5)            # no NEW-VIEW they accept: the view-change timer moves them on
    assert net.core("n3").view == 2 and net.core("n3").status()["role"] == "primary"
    assert ok(net, "write", "x", 2) == {"type": "ok", "primary": "n3"}
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


# -- durability ------------------------------------------------------------------------------------------
def test_restart_recovers_view_log_checkpoint_and_state() -> None:
    net = Net(config={"checkpoint_interval": 4, "log_window": 8, **FAST})
    for i in range(6):
        ok(net, "write", "x", i, seconds=0.05)
    net.crash("n1")
    ok(net, "write", "y", 1, seconds=1.0)
    before = net.core("n3")
    state = (before.view, before.h, before.last_exec, dict(before.kv.data), before.kv.sessions)
    accepted = {n: dict(s.pp) for n, s in before.slots.items()}
    net.crash("n3")
    net.restart("n3")
    after = net.core("n3")
    assert (after.view, after.h, after.last_exec, after.kv.data, after.kv.sessions) == state
    assert {n: dict(s.pp) for n, s in after.slots.items()} == accepted
    net.restart("n1")
    ok(net, "write", "z", 1, seconds=1.0)
    net.tick(0.5)
    assert net.core("n1").kv.data == net.core("n2").kv.data


# -- Byzantine replicas (f of them) -------------------------------------------------------------------
@pytest.mark.parametrize("behaviour", ["silent", "equivocate", "wrong_digest"])
def test_a_faulty_primary_is_voted_out(behaviour: str) -> None:
    net = Net(config=FAST, byzantine={"n1": [behaviour]})
    assert ok(net, "write", "x", 1, seconds=1.5) == {"type": "ok", "primary": "n2"}
    assert all(net.core(n).view >= 1 for n in ("n2", "n3", "n4"))
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


def _client_op(net: Net, targets: Targets, f: str, key: str, value=None, rounds: int = 8):
    """One request the way lab/clientrule.py's clients send it: each attempt to
    ``targets.of(attempt)``, the next one ``client_retry`` later, until f+1 replies match."""
    rule = PBFT.client_rule(net.config, net.names)
    op, attempts = net.op(f, key, value), []
    for attempt in range(1, rounds + 1):
        attempts.append(targets.of(attempt))
        handle = net.submit(op, to=[n for n in attempts[-1] if n in net.up()])
        net.tick(rule.retry)
        res = net.accepted(handle)
        if res is not None:
            targets.learn(res)
            return res, attempts
    return None, attempts


def test_a_client_tries_the_primary_and_f_more_first_then_every_replica() -> None:
    net = Net(config=FAST, byzantine={"n1": ["silent"]})
    targets = Targets(PBFT.client_rule(net.config, net.names), net.names)
    res, attempts = _client_op(net, targets, "write", "x", 1)
    # n1 says nothing, n2 alone cannot make f+1: the retries go to every replica, the backups
    # vote the silent primary out, and the reply names the new one.
    primary = net.core("n3").status()["primary"]
    assert primary != "n1" and res == {"type": "ok", "primary": primary}
    assert attempts[0] == ["n1", "n2"] and attempts[1] == net.names
    res, attempts = _client_op(net, targets, "write", "x", 2)
    after = net.names[(net.names.index(primary) + 1) % 4]
    assert res == {"type": "ok", "primary": primary} and attempts == [[primary, after]]
    assert all(net.core(n).last_exec == 2 for n in ("n2", "n3", "n4"))
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


def test_a_backup_that_learns_a_request_from_the_pre_prepare_watches_the_primary() -> None:
    net = Net(config=FAST)
    net.ignore(m.PREPARE)            # nothing executes: the request stays waiting
    net.submit(net.op("write", "x", 1), to=["n1", "n2"])
    net.deliver_all()
    for n in ("n3", "n4"):           # never sent the request: only the pre-prepare had it
        assert len(net.core(n).waiting) == 1 and "request" in net.core(n).timers


def test_forged_messages_fail_their_signatures() -> None:
    net = Net(config=FAST, byzantine={"n2": ["forge"]})
    for i in range(8):
        ok(net, "write", "x", i, seconds=0.05)
    assert net.drops("n3").get("bad_signature", 0) >= 6
    assert all(net.core(n).kv.data == {"x": 7} for n in ("n1", "n3", "n4"))
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


def test_replayed_messages_change_nothing() -> None:
    net = Net(config={"checkpoint_interval": 4, "log_window": 8}, byzantine={"n1": ["replay"]})
    for i in range(12):
        ok(net, "write", "x", i, seconds=0.05)
    assert sum(net.drops(n).get("watermark", 0) for n in ("n2", "n3", "n4")) >= 3
    assert {v.verdict for v in net.verdicts().values()} == {"holds"}


def test_made_up_replies_are_never_accepted() -> None:
    net = Net(byzantine={"n2": ["wrong_reply"]})
    ok(net, "write", "x", 1)
    handle = net.submit(net.op("read", "x"))
    net.tick(0.5)
    assert net.answers(handle)["n2"]["value"] == f"lie-c1-{net.client_seq}"
    assert net.accepted(handle) == {"type": "ok", "value": 1, "primary": "n1"}


def test_two_colluding_equivocators_out_of_four_break_agreement() -> None:
    net = Net(byzantine={"n1": ["equivocate"], "n2": ["equivocate"]})
    net.run(net.op("write", "x", 1))
    assert net.commits("n3")[1] != net.commits("n4")[1]
    assert net.verdicts()["agreement"].verdict == "violated"
