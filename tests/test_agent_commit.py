"""The agent's commit order, in process: persist, then trace, then send (DESIGN.md, Trace).

A SIGKILL can land between any two steps of a commit; whatever a peer or a client may
already have seen, the trace must already hold. The test looks at the trace file at the very
moment each message and each reply is handed to its socket."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from nodes.agent import Agent


class Recorder:
    """Stands in for a socket: notes what the trace file held when each frame left."""

    def __init__(self, trace: Path, seen: list[tuple[str, list[dict[str, Any]]]], name: str) -> None:
        self.trace, self.seen, self.name = trace, seen, name

    def _note(self) -> None:
        text = self.trace.read_text(encoding="utf-8") if self.trace.exists() else ""
        self.seen.append((self.name, [json.loads(x) for x in text.splitlines()]))

    def send(self, frame: bytes, flags: int = 0) -> None:
        self._note()

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self._note()


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    public, secret = zmq.curve_keypair()
    client_public, _ = zmq.curve_keypair()
    spec = {"lab": "order", "node": "n1", "protocol": "register", "config": {},
            "nodes": {"n1": {"name": "n1"}, "n2": {"name": "n2"}},
            "peers": {"n1": "tcp://127.0.0.1:9", "n2": "tcp://127.0.0.1:9"},
            "bind": "tcp://127.0.0.1:*", "control_bind": "tcp://127.0.0.1:*",
            "keys": {"server_public": public.decode(), "server_secret": secret.decode(),
                     "client_public": client_public.decode()},
            "data_dir": str(tmp_path / "n1"), "seed": 1, "t0": 0}
    for _ in range(100):
        try:
            a = Agent(spec)
            break
        except zmq.ZMQError:    # the previous test's agent's ZAP endpoint is released asynchronously
            time.sleep(0.02)
    dealers, ctl = dict(a.dealers), a.ctl
    try:
        yield a
    finally:
        a.dealers, a.ctl = dealers, ctl
        a._close()


def test_trace_lines_are_written_before_the_handlers_messages_and_replies_leave(agent: Any,
                                                                                 tmp_path: Path) -> None:
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    trace = tmp_path / "n1" / "trace.jsonl"
    agent.dealers["n2"] = Recorder(trace, seen, "message")
    agent.ctl = Recorder(trace, seen, "reply")
    agent.pending["tok"] = (b"ident", 7)
    # One handler's doings: a durable write, a state line, a message and a reply.
    agent.storage.put("value", 1)
    agent.ctx.trace("state", txn="t1", state="committed")
    agent.ctx.send("n2", "echo", {"client": "tok"})
    agent.ctx.reply("tok", {"type": "ok"})
    agent._commit()
    assert [name for name, _ in seen] == ["message", "reply"]
    for name, lines in seen:
        states = [e for e in lines if e["ev"] == "state"]
        assert states and states[0]["data"] == {"txn": "t1", "state": "committed"}, name
        assert any(e["ev"] == "send" and e["type"] == "echo" for e in lines), name


class Disk(Recorder):
    """A Recorder that notes how many fsyncs the node's storage had made when each frame left."""

    def __init__(self, agent: Any, seen: list[Any], name: str) -> None:
        self.agent, self.seen, self.name = agent, seen, name

    def _note(self) -> None:
        self.seen.append((self.name, self.agent.storage.fsyncs))


def test_early_sends_leave_before_the_fsync_and_the_core_hears_of_it_before_the_rest(agent: Any) -> None:
    """A core's ``early_sends`` (a Raft leader's appends) leave before its writes are durable;
    everything else, and any early message queued behind it to the same peer, after the fsync
    and after ``handle_persisted``."""
    seen: list[Any] = []

    class Early(type(agent.core)):          # the register core, with one early message type
        early_sends = frozenset({"echo"})

        def handle_persisted(self) -> None:
            seen.append(("persisted", agent.storage.fsyncs))

    agent.core_cls, agent.core = Early, Early(agent.ctx, agent.core.config)
    agent.dealers["n1"] = Disk(agent, seen, "to n1")
    agent.dealers["n2"] = Disk(agent, seen, "to n2")
    agent.ctl = Disk(agent, seen, "reply")
    agent.pending["tok"] = (b"ident", 7)
    before = agent.storage.fsyncs
    agent.storage.put("value", 1)
    agent.ctx.send("n1", "echo", {"n": 1})          # early: leaves first
    agent.ctx.send("n2", "other", {"n": 2})         # not early
    agent.ctx.send("n2", "echo", {"n": 3})          # early, but behind "other" to the same peer
    agent.ctx.reply("tok", {"type": "ok"})
    agent._commit()
    assert seen == [("to n1", before), ("persisted", before + 1), ("to n2", before + 1),
                    ("to n2", before + 1), ("reply", before + 1)]
    seen.clear()
    agent.ctx.send("n1", "echo", {"n": 4})          # nothing written: no fsync, no callback
    agent._commit()
    assert seen == [("to n1", before + 1)]
