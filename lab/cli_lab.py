"""Interactive labs: ``zlab up``, ``status``, ``fault``, ``client``, ``logs``, ``down``.

``zlab up`` starts a topology's nodes detached and returns; its state file
(lab/labstate.py) lets every later command, from any shell, attach to the
running nodes, act, save the new fault state and let go again.

    zlab up TOPOLOGY.yaml [--name N] [--backend local|docker]
    zlab status [N]
    zlab fault N partition n1,n2 n3,n4,n5 | delay n1 100ms [--to n2] [--jitter 10ms]
                 | loss n1 5% [--to n2] | crash n3 | pause n2 | resume n2 | restart n3 | heal
    zlab client N put x 1 | get x | cas x 1 2 | delete x | echo n1 n2
    zlab logs N n1 [--trace] [--lines K]
    zlab down [N | --all]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab import labstate
from lab.backends import backend_class
from lab.backends.agents import AgentBackend
from lab.cliargs import seed_arg
from lab.clientrule import Tally, Targets, client_rule_of
from lab.errors import BackendError, ConfigError, LabError
from lab.targets import partition_cuts
from nodes.units import format_duration, parse_duration, parse_percent

CLIENT_TIMEOUT = 5.0       # s a `zlab client` op may take, redirects included
ECHO_TIMEOUT = 1.0         # s after which an echo counts as lost
TOPOLOGY_COPY = "topology.yaml"


def add_commands(sub: Any) -> None:
    """Register the interactive-lab commands on `zlab`'s subparsers."""
    up = sub.add_parser("up", help="start a topology's nodes and leave them running")
    up.add_argument("topology", help="topology YAML file")
    up.add_argument("--name", help="lab name (default: the topology's name)")
    up.add_argument("--backend", default="local", choices=["local", "docker"], help="runtime (default: local)")
    up.add_argument("--seed", type=seed_arg, default=None, help="seed (default: the topology's, else random)")
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="nodes, roles and counters of a running lab")
    st.add_argument("name", nargs="?", help="lab name (default: the only lab up)")
    st.add_argument("--json", action="store_true", help="print the agents' status answers as JSON")
    st.set_defaults(func=cmd_status)

    fault = sub.add_parser("fault", help="inject or undo a fault in a running lab")
    fault.add_argument("name", help="lab name")
    acts = fault.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = acts.add_parser("partition", help="split the nodes: partition n1,n2 n3,n4,n5")
    p.add_argument("groups", nargs="+", help="comma-separated groups")
    p.add_argument("--oneway", action="store_true", help="cut only from the first group to the others")
    p = acts.add_parser("delay", help="delay messages from a node: delay n1 100ms [--to n2] [--jitter 10ms]")
    p.add_argument("node")
    p.add_argument("delay", help="one-way delay, e.g. 100ms")
    p.add_argument("--to", help="only towards this node (default: every other node)")
    p.add_argument("--jitter", help="jitter, e.g. 10ms")
    p = acts.add_parser("loss", help="drop a share of a node's messages: loss n1 5% [--to n2]")
    p.add_argument("node")
    p.add_argument("loss", help="percentage, e.g. 5%%")
    p.add_argument("--to", help="only towards this node (default: every other node)")
    for action, text in (("crash", "SIGKILL a node"), ("pause", "SIGSTOP a node"),
                         ("resume", "SIGCONT a paused node"), ("restart", "start a crashed node again")):
        acts.add_parser(action, help=text).add_argument("node")
    acts.add_parser("heal", help="remove every partition, delay and loss (back to the topology's network)")
    fault.set_defaults(func=cmd_fault)

    cl = sub.add_parser("client", help="run one client operation against a running lab")
    cl.add_argument("name", help="lab name")
    ops = cl.add_subparsers(dest="op", metavar="OP", required=True)
    for op, nargs, text in (("put", 2, "put KEY VALUE"), ("get", 1, "get KEY"),
                            ("cas", 3, "cas KEY EXPECTED NEW"), ("delete", 1, "delete KEY")):
        p = ops.add_parser(op, help=text)
        p.add_argument("args", nargs=nargs, metavar="ARG")
        p.add_argument("--node", help="send to this node first (default: the leader, found by redirects)")
    p = ops.add_parser("echo", help="echo NODE PEER: a round trip NODE -> PEER -> NODE (register protocol)")
    p.add_argument("args", nargs=2, metavar="ARG")
    p.add_argument("--count", type=int, default=5, help="round trips to measure (default 5)")
    cl.set_defaults(func=cmd_client)

    lg = sub.add_parser("logs", help="a node's agent log (or trace)")
    lg.add_argument("name", help="lab name")
    lg.add_argument("node")
    lg.add_argument("--trace", action="store_true", help="print the node's trace.jsonl instead")
    lg.add_argument("--lines", "-n", type=int, default=0, help="only the last K lines")
    lg.set_defaults(func=cmd_logs)

    dn = sub.add_parser("down", help="stop a lab and remove its state")
    dn.add_argument("name", nargs="?", help="lab name (default: the only lab up)")
    dn.add_argument("--all", action="store_true", help="every lab in the state dir")
    dn.set_defaults(func=cmd_down)


# -- attaching -----------------------------------------------------------------------------------


def _load_topology(path: str) -> Any:
    from lab.topology import load_scenario
    return load_scenario(path)


@contextmanager
def attached(name: str, *, save: bool = True) -> Iterator[AgentBackend]:
    """The backend of running lab ``name``; its fault state is saved back afterwards."""
    state = labstate.load(name)
    scenario = _load_topology(os.path.join(labstate.lab_dir(name), TOPOLOGY_COPY))
    cls = backend_class(state["kind"])
    backend: AgentBackend = cls.attach(scenario, state)
    try:
        yield backend
    finally:
        if save:
            labstate.save(name, {**state, **backend.save_state()})
        backend.detach()


# -- up ------------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    scenario = _load_topology(args.topology)
    name = args.name or scenario.name
    seed = args.seed if args.seed is not None else (
        scenario.seed if scenario.seed is not None else random.SystemRandom().randrange(2**31))
    d = labstate.lab_dir(name)
    cls = backend_class(args.backend)
    backend: AgentBackend = cls(scenario, seed, d, lab=name, state_dir=d, detached=True)
    # The name is this command's from here on (a second `up` of it exits 3), and what it starts
    # is findable by `zlab down` even if this process is killed before it saves the state file.
    labstate.claim(d, backend.claim_record())
    try:
        shutil.copyfile(args.topology, os.path.join(d, TOPOLOGY_COPY))
        backend.start()
    except BaseException:
        labstate.remove(name)        # start() stopped whatever it had started
        raise
    state = backend.save_state()
    state.update(name=name, topology=os.path.abspath(args.topology), created=time.time())
    labstate.save(name, state)
    backend.detach()
    print(f"lab {name} is up: {len(scenario.nodes)} {scenario.protocol} nodes on {args.backend} (seed {seed})")
    _print_nodes(backend, name)
    print(f"next: zlab status {name} | zlab client {name} put x 1 | zlab fault {name} ... | zlab down {name}")
    return 0


def _print_nodes(backend: AgentBackend, name: str) -> None:
    rt = backend.save_state().get("runtime", {})
    for n in backend.names:
        where = backend.addresses[n].control if n in backend.addresses else "?"
        pid = rt.get("pids", {}).get(n)
        print(f"  {n}  {'pid ' + str(pid) + '  ' if pid else ''}control {where}")


# -- status ---------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    if not args.name and len(labstate.names()) > 1:
        for n in labstate.names():
            st = labstate.load(n)
            print(f"{n}  {st.get('kind')}  {len(st.get('nodes', []))} nodes  up {_age(st.get('t0'))}")
        return 0
    name = labstate.only_lab(args.name)
    with attached(name, save=False) as b:
        answers = {n: b.agent_status(n, timeout=1.0) for n in b.names}
        if args.json:
            print(json.dumps(answers, indent=1, sort_keys=True, default=str))
            return 0
        print(f"lab {name} ({b.kind}, {b.scenario.protocol}), up {_age(b.t0)}; faults: {_faults_text(b)}")
        rows = [("node", "state", "role", "term", "leader", "sent", "recv", "dropped", "requests")]
        for n in b.names:
            a = answers[n]
            state = b.node_state(n) if hasattr(b, "node_state") else ("up" if a else "?")
            if a is None and state == "up":
                state = "no answer"
            core = (a or {}).get("core", {})
            c = (a or {}).get("counters", {})
            dropped = sum((c.get("dropped") or {}).values()) if a else ""
            nums = [str(c.get(k, 0)) if a else "" for k in ("sent", "recv")]
            rows.append((n, state, str(core.get("role", "-")), str(core.get("term", "-")),
                         str(core.get("leader") or "-"), *nums, str(dropped),
                         str(c.get("requests", 0)) if a else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        for note in b.notes():       # which faults the kernel makes and which the agent shim
            print(f"note: {note}")
    return 0


def _age(t0: float | None) -> str:
    if not t0:
        return "?"
    s = int(time.time() - t0)
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"


def _faults_text(b: AgentBackend) -> str:
    out = []
    if b.cuts:
        out.append(f"{len(b.cuts)} cut links")
    base = b.scenario.network
    shaped = [f"{s}->{d}" for (s, d), p in sorted(b.links.items()) if p != base.link(s, d)]
    if shaped:
        out.append("shaped " + " ".join(shaped))
    out += [f"{n} crashed" for n in sorted(b.down)] + [f"{n} paused" for n in sorted(b.paused)]
    return ", ".join(out) or "none"


# -- fault ------------------------------------------------------------------------------------------------


def cmd_fault(args: argparse.Namespace) -> int:
    check_fault_args(args)
    with attached(args.name) as b:
        msg = apply_fault(b, args)
    print(msg)
    return 0


def _node(b: AgentBackend, name: str) -> str:
    if name not in b.names:
        raise ConfigError(f"no node {name!r} in this lab (nodes: {', '.join(b.names)})")
    return name


def _targets(b: AgentBackend, node: str, to: str | None) -> list[str]:
    _node(b, node)
    return [_node(b, to)] if to else [n for n in b.names if n != node]


def _value(parse: Any, text: str, what: str) -> Any:
    try:
        return parse(text)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}") from None


def check_fault_args(args: argparse.Namespace) -> None:
    """What a `zlab fault` command line gets wrong on its own, before attaching to the lab."""
    if args.action == "partition":
        empty = [i for i, g in enumerate(args.groups, 1) if not [n for n in g.split(",") if n.strip()]]
        if empty:
            raise ConfigError(f"partition: group {empty[0]} names no node "
                              "(groups are comma-separated names: partition n1,n2 n3,n4,n5)")
    if args.action in ("delay", "loss") and args.to is not None and args.to == args.node:
        raise ConfigError(f"--to {args.to}: a node has no link to itself (--to names another node)")


def apply_fault(b: AgentBackend, args: argparse.Namespace) -> str:
    """Do one `zlab fault` action on an attached backend; returns the line to print."""
    a = args.action
    if a == "partition":
        groups = [[_node(b, n.strip()) for n in g.split(",") if n.strip()] for g in args.groups]
        if len(groups) < 2 and not args.oneway:
            raise ConfigError("a partition needs at least two groups, e.g. n1,n2 n3,n4,n5")
        cuts = partition_cuts(groups, oneway=args.oneway)
        if not cuts:
            raise ConfigError("this partition cuts no link (every pair shares a group); "
                              "to undo a partition, `zlab fault NAME heal`")
        mech = b.set_cuts(cuts)
        return f"partition {' | '.join(','.join(g) for g in groups)}: {len(cuts)} directed links cut ({mech})"
    if a in ("delay", "loss"):
        if a == "delay":
            change: dict[str, Any] = {"delay": _value(parse_duration, args.delay, "delay")}
            if args.jitter:
                change["jitter"] = _value(parse_duration, args.jitter, "--jitter")
        else:
            change = {"loss": _value(parse_percent, args.loss, "loss")}
        dsts = _targets(b, args.node, args.to)
        mech = ""
        for d in dsts:
            mech = b.set_link(args.node, d, b.links[(args.node, d)].merged(**change))
        what = ", ".join(f"{k} {format_duration(v) if k != 'loss' else f'{v * 100:g}%'}"
                         for k, v in change.items())
        return f"{args.node} -> {','.join(dsts)}: {what} ({mech})"
    if a == "heal":
        b.set_cuts(frozenset())
        base = b.scenario.network
        healed = 0
        for (s, d), p in sorted(b.links.items()):
            want = base.link(s, d)
            if p != want:
                b.set_link(s, d, want)
                healed += 1
        left = [f"{n} is crashed (zlab fault {b.lab} restart {n})" for n in sorted(b.down)]
        left += [f"{n} is paused (zlab fault {b.lab} resume {n})" for n in sorted(b.paused)]
        return "healed: no cut links, " + f"{healed} links back to the topology's network" + (
            "; " + "; ".join(left) if left else "")
    node = _node(b, args.node)
    if a == "crash":
        if node in b.down:
            raise ConfigError(f"{node} is already crashed")
        b.crash(node)
        return f"{node} crashed (SIGKILL)" if b.kind == "local" else f"{node} crashed"
    if a == "restart":
        if node not in b.down:
            raise ConfigError(f"{node} is not crashed; `zlab fault {b.lab} crash {node}` first")
        b.restart(node)
        return f"{node} restarted from its data dir and is ready"
    if a == "pause":
        b.pause(node)
        return f"{node} paused"
    if a == "resume":
        if node not in b.paused:
            raise ConfigError(f"{node} is not paused")
        b.resume(node)
        return f"{node} resumed"
    raise ConfigError(f"unknown fault {a!r}")


# -- client ------------------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """``1`` -> 1, ``"a b"`` / ``[1,2]`` -> JSON, anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def client_op(op: str, args: list[str]) -> dict[str, Any]:
    if op == "put":
        return {"f": "write", "key": args[0], "value": _parse_value(args[1])}
    if op == "get":
        return {"f": "read", "key": args[0]}
    if op == "cas":
        return {"f": "cas", "key": args[0], "value": [_parse_value(args[1]), _parse_value(args[2])]}
    if op == "delete":
        return {"f": "delete", "key": args[0]}
    raise ConfigError(f"unknown client op {op!r}")


def run_op(b: AgentBackend, op: dict[str, Any], first: str | None = None,
           timeout: float = CLIENT_TIMEOUT, redirect: bool = True,
           ) -> tuple[dict[str, Any] | None, str | None, float]:
    """Send ``op``, following not_leader redirects and trying other nodes when one does not
    answer (unless ``redirect`` is False); (result or None, node that answered, seconds)."""
    live = [n for n in b.names if n not in b.down and n not in b.paused]
    if not live:
        raise BackendError("no node is running")
    target = first or live[0]
    op = {**op, "client": f"cli-{os.getpid()}", "seq": int(time.time() * 1000)}
    start = time.monotonic()
    deadline = start + timeout
    rule = client_rule_of(b.scenario)
    if rule is not None and redirect:
        return _run_by_rule(b, rule, op, live, deadline, start)
    tried: set[str] = set()
    for _ in range(50):
        box: list[dict[str, Any]] = []
        sent = time.monotonic()
        b.submit(target, op, box.append)
        b.wait_for(lambda box=box: bool(box), max(0.0, min(deadline, sent + 1.0) - time.monotonic()))
        if not box:
            if not redirect:
                break
            tried.add(target)
        else:
            res = box[0]
            if not (res.get("type") == "fail" and res.get("error") == "not_leader"):
                return res, target, time.monotonic() - sent
            tried.add(target)
            hint = res.get("leader")
            if hint in live and hint != target:
                target = hint
                continue
            time.sleep(0.05)      # mid-election: give it a moment
        if time.monotonic() >= deadline:
            break
        rest = [n for n in live if n not in tried] or live
        target = rest[0] if rest[0] != target or len(rest) == 1 else rest[-1]
    return None, None, time.monotonic() - start


def _run_by_rule(b: AgentBackend, rule: Any, op: dict[str, Any], live: list[str], deadline: float,
                 start: float) -> tuple[dict[str, Any] | None, str | None, float]:
    """Under a core's client rule (PBFT): signed, to the running nodes of each attempt
    (``Targets``: first the primary and f more, then every node), again every ``rule.retry``,
    until ``rule.replies`` nodes answered alike."""
    if rule.sign:
        op = b.client_signer().sign_request(op)
    tally, box = Tally(rule.replies), []

    def answer(node: str, res: dict[str, Any]) -> None:
        if not box and tally.add(node, res):
            box.append((res, node))
    targets, attempt = Targets(rule, b.names), 0
    while not box and time.monotonic() < deadline:
        attempt += 1
        for node in targets.of(attempt):
            if node in live:
                b.submit(node, op, lambda res, node=node: answer(node, res))
        b.wait_for(lambda: bool(box), max(0.0, min(rule.retry, deadline - time.monotonic())))
    if not box:
        return None, None, time.monotonic() - start
    return box[0][0], box[0][1], time.monotonic() - start


def cmd_client(args: argparse.Namespace) -> int:
    with attached(args.name, save=False) as b:
        if args.op == "echo":
            node, peer = _node(b, args.args[0]), _node(b, args.args[1])
            rtts, lost = [], 0
            for _ in range(max(1, min(args.count, 1000))):
                res, _, dt = run_op(b, {"f": "echo", "peer": peer}, first=node, timeout=ECHO_TIMEOUT,
                                   redirect=False)
                if res is None:
                    lost += 1
                elif res.get("type") != "ok":
                    print(f"echo: {res}")
                    return 1
                else:
                    rtts.append(dt * 1000)
            if not rtts:
                print(f"echo {node} -> {peer}: no answer ({lost} lost)")
                return 2
            rtts.sort()
            print(f"echo {node} -> {peer} -> {node}: {len(rtts)} round trips, "
                  f"min {rtts[0]:.1f} ms, median {rtts[len(rtts) // 2]:.1f} ms, max {rtts[-1]:.1f} ms"
                  + (f", {lost} lost (no answer within {ECHO_TIMEOUT:g}s)" if lost else ""))
            return 0
        op = client_op(args.op, args.args)
        res, node, dt = run_op(b, op, first=args.node)
    if res is None:
        print(f"{args.op}: no answer within {CLIENT_TIMEOUT:g}s (outcome unknown)")
        return 2
    kind = res.get("type")
    if kind == "ok":
        shown = f" {op['key']} = {json.dumps(res.get('value'))}" if op["f"] == "read" else ""
        print(f"ok{shown}  ({node}, {dt * 1000:.1f} ms)")
        return 0
    detail = res.get("error", "")
    print(f"{kind}{': ' + str(detail) if detail else ''}  ({node}, {dt * 1000:.1f} ms)")
    return 1 if kind == "fail" else 2


# -- logs ---------------------------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    with attached(args.name, save=False) as b:
        node = _node(b, args.node)
        data = b.read_node_file(node, "trace.jsonl" if args.trace else "agent.log")
        if data is None:
            raise BackendError(f"cannot read {node}'s {'trace' if args.trace else 'log'} now "
                               f"({'it is ' + ('down' if node in b.down else 'paused') if node in b.down | b.paused else 'no answer'})")
    text = data.decode("utf-8", "replace")
    if args.lines > 0:
        text = "\n".join(text.splitlines()[-args.lines:]) + "\n"
    sys.stdout.write(text)
    return 0


# -- down ---------------------------------------------------------------------------------------------------


def cmd_down(args: argparse.Namespace) -> int:
    names = labstate.names() if args.all else [labstate.only_lab(args.name)]
    failed = 0
    left = labstate.leftovers() if args.all else []
    for name in [*names, *left]:
        try:
            print(f"lab {name} {down_lab(name)}")
        except LabError as e:
            failed += 1
            print(f"zlab: {name}: {e}", file=sys.stderr)
    if args.all:
        swept = _sweep_docker()
        if not names and not left and not swept:
            print("no lab was up")
    return 3 if failed else 0


def _sweep_docker() -> int:
    """`down --all` also removes labelled containers, networks and volumes that no state file
    names (an orchestrator killed with SIGKILL, a state dir deleted by hand) -- only this
    owner's (``$ZLAB_OWNER``, default ``zlab``), so a user's sweep spares test sessions' labs."""
    from lab.backends.docker import default_owner, docker_client, down_all
    try:
        client = docker_client()
    except BackendError:  # no engine answers: nothing of ours can be running there
        return 0
    removed = down_all(owner=default_owner(), client=client)
    count = sum(len(v) for v in removed.values())
    if count:
        print("removed by label: " + ", ".join(f"{len(v)} {k}" for k, v in removed.items() if v))
    return count


def down_lab(name: str) -> str:
    """Stop every node of ``name`` and remove its state dir (keys included); what was done."""
    d = labstate.lab_dir(name)
    if not os.path.isfile(os.path.join(d, labstate.STATE_FILE)) and os.path.isdir(d):
        if name not in labstate.leftovers():
            raise ConfigError(labstate.taken_why(name, d))
        return remove_leftover(name)
    state = labstate.load(name)
    try:
        scenario = _load_topology(os.path.join(d, TOPOLOGY_COPY))
        b = backend_class(state["kind"]).attach(scenario, state)
    except LabError:
        if state.get("kind") != "local":
            raise
    else:
        b.stop()
    # Whatever the state file does not name (or could not be attached to) but was started
    # with this lab's specs: nothing of the lab outlives its `down`.
    from lab.backends.local import agents_under, end_agents
    end_agents(agents_under(d))
    labstate.remove(name)
    return "is down"


def remove_leftover(name: str) -> str:
    """Stop and remove what a killed `zlab up`/`zlab run` of lab directory ``name`` started:
    its agents (found by their spec files below the directory, paused ones resumed first),
    its containers, network and volumes (by the run id they are labelled with), its keys."""
    from lab.backends.local import agents_under, end_agents
    d = labstate.lab_dir(name)
    rec = labstate.read_claim(d) or {}
    what = []
    agents = end_agents(agents_under(d))
    if agents:
        what.append(f"{agents} agents")
    if rec.get("kind") == "docker" and rec.get("run"):
        from lab.backends.docker import docker_client, down_all
        try:
            removed = down_all(rec.get("lab"), run=rec["run"], client=docker_client())
        except BackendError as e:
            raise BackendError(f"cannot reach the docker engine to remove lab {name}'s "
                               f"containers: {e}") from None
        what += [f"{len(v)} {k}" for k, v in removed.items() if v]
    if os.path.isdir(os.path.join(d, "keys")):
        what.append("its keys")
    labstate.remove(name)
    return "is down: " + ((f"stopped and removed what a killed command left: {', '.join(what)}")
                          if what else "removed the directory a killed command left")
