"""Bank transfers for 2PC and 3PC: money moves between accounts on different participants.

Every operation is ``{"f": "transfer", "from": a, "to": b, "amount": n}`` sent
to the coordinator (a participant that gets one answers ``not_leader`` with
the coordinator's name, and the runner retries there). At the end the
workload reads every participant's balances, ``{"f": "balances"}``, into
``final.json`` as ``{"balances": {account: balance}, "per_participant": ...,
"missing": [...]}`` for the conservation check.

The accounts themselves belong to the protocol: each participant creates its
share of ``config.accounts`` accounts at ``config.initial_balance`` on its
first start. The workload takes both from the protocol's config, so the two
cannot disagree; naming them under ``workload:`` as well is allowed only with
the same values.

params:
  ``amount``            ``[low, high]`` whole units per transfer (default ``[1, 20]``)
  ``abort_probability`` fraction of transfers that ask for more money than the whole bank
                        holds, so the paying participant must vote abort (default 0)
"""

from __future__ import annotations

from random import Random
from typing import Any

from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload
from nodes.protocols import get as get_protocol
from nodes.protocols.commit import roles
from nodes.protocols.core import ConfigValueError, build_config
from nodes.units import shown


class TransferWorkload(Workload):
    kind = "transfer"
    params = ("accounts", "initial_balance", "amount", "abort_probability")

    def __init__(self, spec: WorkloadSpec, scenario: Scenario, rng: Random) -> None:
        super().__init__(spec, scenario, rng)
        self.accounts, self.initial_balance = bank_shape(scenario)
        p = dict(spec.params)
        for name, have in (("accounts", self.accounts), ("initial_balance", self.initial_balance)):
            if name in p and p[name] != have:
                raise self._error(f"is {shown(p[name])} but the protocol's config.{name} is {have}; "
                                  f"set config.{name} (the participants create the accounts)", name)
        low_high = p.get("amount", [1, 20])
        if (not isinstance(low_high, (list, tuple)) or len(low_high) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in low_high)
                or not 1 <= low_high[0] <= low_high[1]):
            raise self._error(f"expected [low, high] whole numbers with 1 <= low <= high, got {shown(low_high)}",
                              "amount")
        self.amount = (int(low_high[0]), int(low_high[1]))
        ap = p.get("abort_probability", 0.0)
        if isinstance(ap, str) and ap.strip().endswith("%"):
            ap = float(ap.strip()[:-1]) / 100.0
        if isinstance(ap, bool) or not isinstance(ap, (int, float)) or not 0.0 <= ap <= 1.0:
            raise self._error(f"expected a fraction 0..1 or a percentage, got {shown(ap)}", "abort_probability")
        self.abort_probability = float(ap)
        if self.accounts < 2:
            raise self._error("a transfer needs at least 2 accounts", "accounts")
        specs = {n.name: n.as_dict() for n in scenario.nodes}
        _, self.participants = roles(specs)

    def _error(self, message: str, name: str) -> ConfigError:
        return ConfigError(message, path=self.scenario.source, field=f"workload.{name}")

    def next_op(self, process: int) -> dict[str, Any]:
        src, dst = self.rng.sample(range(self.accounts), 2)
        if self.rng.random() < self.abort_probability:
            amount = self.accounts * self.initial_balance + 1     # more than the bank holds
        else:
            amount = self.rng.randint(*self.amount)
        return transfer_op(src, dst, amount)

    def final_ops(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(p, {"f": "balances"}) for p in self.participants]

    def record_final(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        balances: dict[str, int] = {}
        per: dict[str, Any] = {}
        missing: list[str] = []
        for p, res in zip(self.participants, results, strict=False):
            if res.get("type") == "ok" and isinstance(res.get("value"), dict):
                per[p] = res["value"]
                balances.update(res["value"])
            else:
                per[p] = None
                missing.append(p)
        missing += self.participants[len(results):]
        return {"balances": dict(sorted(balances.items(), key=lambda kv: int(kv[0]))),
                "per_participant": per, "missing": missing,
                "initial_total": self.accounts * self.initial_balance}


def transfer_op(src: int, dst: int, amount: int) -> dict[str, Any]:
    """The client op that moves ``amount`` from account ``src`` to account ``dst``."""
    return {"f": "transfer", "from": src, "to": dst, "amount": amount,
            "key": None, "value": [src, dst, amount]}


def bank_shape(scenario: Scenario) -> tuple[int, int]:
    """(accounts, initial_balance) as the participants will use them: the protocol's config."""
    try:
        cfg = build_config(get_protocol(scenario.protocol), scenario.config)
    except KeyError as e:
        raise ConfigError(str(e.args[0]), path=scenario.source, field="protocol") from None
    except ConfigValueError as e:
        raise ConfigError(e.message, path=scenario.source, field=f"config.{e.field}") from None
    accounts = getattr(cfg, "accounts", None)
    initial = getattr(cfg, "initial_balance", None)
    if accounts is None or initial is None:
        raise ConfigError(f"protocol {scenario.protocol} has no bank (config.accounts); the transfer "
                          "workload runs on twopc and threepc", path=scenario.source, field="workload.kind")
    return accounts, initial
