"""A single durable register: the smallest core, and the runtimes' own test subject."""

from __future__ import annotations

from typing import Any

from nodes.protocols.core import Core


class Register(Core):
    name = "register"
    message_types = frozenset({"echo", "echo_reply"})
    optional_checks = ("linearizable",)

    def start(self) -> None:
        self.value = self.ctx.storage.get("value")

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        if op.get("f") == "write":
            self.ctx.storage.put("value", op.get("value"))
            self.value = op.get("value")
            self.ctx.reply(client, {"type": "ok"})
        elif op.get("f") == "read":
            self.ctx.reply(client, {"type": "ok", "value": self.value})
        elif op.get("f") == "echo":
            # A round trip through a peer: used to measure the network, faults included.
            self.ctx.send(op["peer"], "echo", {"client": client})
        else:
            self.ctx.reply(client, {"type": "fail", "error": f"unsupported op {op.get('f')!r}"})

    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if type == "echo":
            self.ctx.send(src, "echo_reply", body)
        elif type == "echo_reply":
            self.ctx.reply(body["client"], {"type": "ok", "value": src})
