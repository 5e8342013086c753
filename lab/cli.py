"""``zlab``: the command line.

    zlab run SCENARIO.yaml [--backend sim|local|docker] [--seed N] [--out DIR] [--no-progress]
    zlab check RUN_DIR                       re-run a stored run's checks
    zlab check --history FILE --model kv     check a history file alone (--format edn: Jepsen's)
    zlab protocols [NAME] [--diagram NAME]   protocols, their tunables and named bugs
    zlab compare [--backend B] [--protocols a,b] [--faults f,g] [--seed N] [--out DIR] [--views]
                                             the tutorial's comparison table, measured
    zlab up/status/fault/client/logs/down    (lab/cli_lab.py, when present)

Exit codes (DESIGN.md): 0 every verdict as expected, 1 a verdict differs,
2 a check could not decide, 3 bad input or infrastructure (one line on
stderr: ``zlab: <what and where>``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lab.cliargs import seconds_arg, seed_arg
from lab.errors import ConfigError, LabError

EXIT_BAD_INPUT = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors are bad input (exit 3), not argparse's 2, which means 'undecided' here."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zlab", description="A distributed-systems lab: run protocols under faults "
                "and check what they promise.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario, check it, write its run directory")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--backend", default=None, choices=["sim", "local", "docker"],
                     help="runtime (default: the scenario's `backend:` key, else local)")
    run.add_argument("--seed", type=seed_arg, default=None,
                     help="seed for everything the lab chooses (default: the scenario's, else random)")
    run.add_argument("--out", default=None, help="run directory (default: results/<name>-<UTC time>)")
    run.add_argument("--no-progress", action="store_true", help="no live progress line")
    run.add_argument("--time-limit", type=seconds_arg, default=30.0, metavar="S",
                     help="seconds a search-based checker may spend before answering unknown")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="re-run the checks of a run directory, or check a history file")
    check.add_argument("run_dir", nargs="?", help="a run directory written by `zlab run`")
    check.add_argument("--history", help="a history.jsonl to check on its own")
    check.add_argument("--model", default="kv", help="model for --history (default: kv)")
    check.add_argument("--format", default=None, choices=["jsonl", "edn"], dest="fmt",
                       help="of --history: zlab's jsonl, or Jepsen's history.edn "
                            "(default: edn for a .edn file, else jsonl)")
    check.add_argument("--time-limit", type=seconds_arg, default=30.0, metavar="S",
                       help="seconds the linearizability search may take (default 30)")
    check.set_defaults(func=cmd_check)

    prot = sub.add_parser("protocols", help="list protocols, their tunables and named bugs")
    prot.add_argument("name", nargs="?", help="one protocol")
    prot.add_argument("--diagram", metavar="NAME", help="print a protocol's state diagram")
    prot.set_defaults(func=cmd_protocols)

    comp = sub.add_parser("compare", help="run one fault suite against every protocol and write "
                          "the comparison table (docs/compare.md)")
    comp.add_argument("--backend", default="sim", choices=["sim", "local", "docker"],
                      help="runtime of every run (default: sim)")
    comp.add_argument("--protocols", default=None, metavar="A,B",
                      help="rows to run, by protocol or row name (default: every registered row)")
    comp.add_argument("--faults", default=None, metavar="F,G",
                      help="faults of the suite to run (default: all: none, crash, minority, "
                           "majority, loss, oneway, pause)")
    comp.add_argument("--seed", type=int, default=1, help="the seed of every run (default 1)")
    comp.add_argument("--out", default=None,
                      help="directory to write (default: results/compare-<UTC time>)")
    comp.add_argument("--views", action="store_true",
                      help="give every run directory its views too (plots, perfetto, space-time); "
                           "slower")
    comp.set_defaults(func=cmd_compare)

    from lab import cli_lab  # up/status/fault/client/logs/down
    cli_lab.add_commands(sub)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM takes the same road as Ctrl-C, so the runner's finally stops every node it started.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    try:
        return _main(argv)
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        return int(args.func(args) or 0)
    except LabError as e:
        print(f"zlab: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        # The runner's finally has stopped the backend by the time we get here.
        print("zlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:       # `zlab protocols | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as e:       # --help and --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_BAD_INPUT)
    except OSError as e:          # a full disk, a file not allowed: infrastructure, not a verdict
        where = f"{e.filename}: " if e.filename else ""
        print(f"zlab: {_one_line(f'{where}{e.strerror or e}')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - last resort: a bug must not exit 1, which is a verdict
        if os.environ.get("ZLAB_DEBUG"):
            traceback.print_exc()
        where = "; ".join(getattr(e, "__notes__", ()))      # the simulator's node and sim time
        print(f"zlab: {_one_line(f'internal error: {type(e).__name__}: {e}')}"
              + (f" ({_one_line(where)})" if where else "")
              + " -- a bug in zlab; ZLAB_DEBUG=1 prints the traceback", file=sys.stderr)
        return EXIT_BAD_INPUT


MAX_LINE = 2000     # characters of an error line: a message quoting a huge value is cut


def _one_line(msg: str) -> str:
    line = " ".join(msg.splitlines())
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE]}... ({len(line) - MAX_LINE} more characters)"


# -- run -------------------------------------------------------------------------------------------


def load(path: str) -> Any:
    from lab.topology import load_scenario
    if not Path(path).is_file():
        raise ConfigError("no such scenario file", path=path)
    return load_scenario(path)


def cmd_run(args: argparse.Namespace) -> int:
    from lab.runner import run_scenario
    scenario = load(args.scenario)
    # DESIGN.md: local is the default runtime; a run directory's scenario.yaml names its own.
    backend = args.backend or scenario.raw.get("backend") or "local"
    result = run_scenario(scenario, backend_kind=backend, seed=args.seed, out=args.out,
                          progress=not args.no_progress and sys.stderr.isatty(),
                          time_limit=args.time_limit)
    return result.exit_code


# -- check ----------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    if args.history:
        if args.run_dir:
            raise ConfigError("give either RUN_DIR or --history, not both")
        fmt = args.fmt or ("edn" if args.history.endswith(".edn") else "jsonl")
        return check_history(args.history, args.model, args.time_limit, fmt)
    if not args.run_dir:
        raise ConfigError("zlab check wants a RUN_DIR or --history FILE")
    return check_run_dir(Path(args.run_dir), args.time_limit)


def check_history(path: str, model: str, time_limit: float, fmt: str = "jsonl") -> int:
    from lab.checks.base import HOLDS, VIOLATED
    from lab.checks.linearizable import check_history_file
    v = check_history_file(path, model, time_limit, fmt)
    print(f"{v.check}: {v.verdict}" + (f" -- {v.detail}" if v.detail else ""))
    return 0 if v.verdict == HOLDS else 1 if v.verdict == VIOLATED else 2


def check_run_dir(run_dir: Path, time_limit: float = 30.0) -> int:
    """Read a run directory, re-run its checks, rewrite checks.json, print the verdicts."""
    from lab import report
    from lab.checks.base import RunData
    from lab.checks.registry import run_checks, split_check_items
    from lab.history import load_history
    from lab.runner import check_names
    from lab.topology import read_yaml
    from lab.tracefile import read_json, read_trace
    if not run_dir.is_dir():
        raise ConfigError("not a run directory", path=str(run_dir))
    path = run_dir / "scenario.yaml"
    scenario = read_yaml(str(path))
    if not isinstance(scenario, dict):
        raise ConfigError("expected a mapping", path=str(path))
    trace = read_trace(run_dir / "trace.jsonl")
    history = load_history(run_dir / "history.jsonl")
    final_path = run_dir / "final.json"
    final = read_json(final_path, "final.json") if final_path.exists() else {}
    expect = dict(scenario.get("expect") or {})
    listed, params = split_check_items(list(scenario.get("checks") or []),
                                       str(scenario.get("protocol", "")))
    names = check_names(listed, expect, str(scenario.get("protocol", "")))
    data = RunData(scenario=scenario, trace=trace, history=history, final=final,
                   time_limit=time_limit)
    verdicts, code = run_checks(names, data, expect, params)
    report.write_checks(run_dir, verdicts, expect, code)
    for line in report.verdict_lines(verdicts, expect):
        print(line)
    return code


# -- compare --------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    from lab.compare import failed_runs, run_compare

    def names(text: str | None) -> list[str] | None:
        return [n.strip() for n in text.split(",") if n.strip()] if text else None
    table = run_compare(backend=args.backend, names=names(args.protocols),
                        faults=names(args.faults), seed=args.seed, out=args.out, views=args.views)
    failed = failed_runs(table)
    if failed:
        print(f"zlab: {len(failed)} runs could not be made: {', '.join(failed)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


# -- protocols ---------------------------------------------------------------------------------


def cmd_protocols(args: argparse.Namespace) -> int:
    from nodes import protocols
    from nodes.protocols.core import describe_tunables
    if args.diagram:
        cls = _protocol(args.diagram)
        diagram = getattr(cls, "diagram", None)
        if diagram is None:
            raise ConfigError(f"protocol {args.diagram!r} has no state diagram "
                              "(only finite protocols with a transition table draw one)")
        print(diagram())
        return 0
    names = [args.name] if args.name else protocols.names()
    for i, name in enumerate(names):
        if i:
            print()
        try:
            cls = _protocol(name)
        except ConfigError:
            if args.name:
                raise
            print(f"{name}  (not available)")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name}" + (f"  {doc[0]}" if doc else ""))
        if cls.default_checks:
            print(f"  checks: {', '.join(cls.default_checks)}")
        print("  tunables:")
        for row in describe_tunables(cls):
            default = row["default"]
            if isinstance(default, tuple):
                default = list(default)
            unit = f" [{row['unit']}]" if row["unit"] else ""
            print(f"    {row['name']}{unit} = {default!r}: {row['doc']}")
        if cls.presets:
            print(f"  presets: {', '.join(sorted(cls.presets))}")
        if cls.bugs:
            print("  bugs:")
            for bug, what in sorted(cls.bugs.items()):
                print(f"    {bug}: {what}")
        if cls.behaviours:
            print("  byzantine behaviours (a node's `byzantine: [...]` in YAML):")
            for name, what in sorted(cls.behaviours.items()):
                print(f"    {name}: {what}")
    return 0


def _protocol(name: str) -> Any:
    from nodes import protocols
    try:
        return protocols.get(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    except ImportError as e:
        raise ConfigError(f"protocol {name!r} cannot be loaded: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
