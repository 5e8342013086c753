"""Regenerate the README's benchmark table from bench/results.json: never copied by hand.

    python -m bench.readme_table [--results bench/results.json] [--readme README.md]

Rewrites what stands between the ``<!-- bench:begin -->`` and ``<!-- bench:end -->``
lines. Each section of ``make bench`` writes its own rows (``readme_rows``: figure,
zlab, anchor, goal) beside its figures, so the table shows exactly what was measured,
in the order of bench/__main__.py's sections, with the date of the results file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import SECTIONS

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def table(results: dict[str, Any]) -> str:
    cpus = (results.get("machine") or {}).get("cpus", "?")
    lines = [f"Measured {results.get('when', '?')} on {cpus} cores by `make bench`; each figure "
             "is the median of alternating trials, every trial is in `bench/results.json`.", "",
             "| figure | zlab | anchor, same command | goal |", "|---|---|---|---|"]
    for name in SECTIONS:
        section = results.get(name)
        for row in (section.get("readme_rows") or []) if isinstance(section, dict) else []:
            lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def rewrite(readme: str, results: dict[str, Any]) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(results)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.readme_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="bench/results.json")
    ap.add_argument("--readme", default="README.md")
    args = ap.parse_args(argv)
    try:
        results = json.loads(Path(args.results).read_text(encoding="utf-8"))
        text = Path(args.readme).read_text(encoding="utf-8")
        Path(args.readme).write_text(rewrite(text, results), encoding="utf-8")
    except (OSError, ValueError) as e:
        print(f"bench.readme_table: {e}", file=sys.stderr)
        return 3
    print(f"{args.readme}: benchmark table rewritten from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
