"""trace.jsonl: writing, reading and merging trace events (docs/trace.md).

The file form is canonical -- keys sorted, compact separators, ``ts``
rounded to the microsecond -- so the simulator writes byte-identical files
for one seed, and ``diff`` between two runs shows where they part.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator
from json.encoder import c_make_encoder
from json.encoder import encode_basestring_ascii as _js_str
from pathlib import Path
from typing import Any

from lab.errors import CheckError

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=lambda o: _jsonable(o))


def _jsonable(value: Any) -> Any:
    """Values a core may trace that JSON has no word for."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)   # sorted: set order differs between processes
    raise TypeError(f"trace values must be JSON-like, got {type(value).__name__}: {value!r}")


def _sort_key(event: dict[str, Any]) -> tuple[float, str]:
    return (event["ts"], event["node"])


# ``_encoder.encode`` made cheaper: its C encoder built once instead of per call, without the
# cycle check (an event is a tree: it came off the wire or out of a core's fields; a cycle
# still fails, with RecursionError): a third cheaper on the simulator's hot path.
_chunks = (c_make_encoder(None, _encoder.default, _js_str, None, ":", ",", True, False, True)
           if c_make_encoder is not None else None)


_MESSAGE_KEYS = frozenset(("ts", "node", "lc", "ev", "mid", "type", "peer"))   # a send's or a recv's
_FINITE = 1e308     # json writes NaN and Infinity, repr nan and inf: those go to the encoder


def encode_event(event: dict[str, Any]) -> str:
    """One event as its canonical line (without the newline)."""
    ts = event.get("ts")
    if type(ts) is float:
        if round(ts, 6) != ts:
            event = {**event, "ts": round(ts, 6)}
        elif len(event) == 7 and event.keys() == _MESSAGE_KEYS:
            # Two events in three of a run: filled in by hand, the same line as the encoder's
            # (keys in sorted order, repr of an exact int or float) at half the cost.
            ev, lc, mid, node, peer, kind = (event["ev"], event["lc"], event["mid"], event["node"],
                                             event["peer"], event["type"])
            if (type(lc) is int and type(mid) is int and type(ev) is str and type(node) is str
                    and type(peer) is str and type(kind) is str and -_FINITE < ts < _FINITE):
                return (f'{{"ev":{_js_str(ev)},"lc":{lc!r},"mid":{mid!r},"node":{_js_str(node)},'
                        f'"peer":{_js_str(peer)},"ts":{ts!r},"type":{_js_str(kind)}}}')
    return "".join(_chunks(event, 0)) if _chunks is not None else _encoder.encode(event)


def write_trace(events: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write ``events`` (already in order) to ``path`` as JSON lines; returns how many.
    Lines go out in blocks: a run writes a line per message and per timer."""
    it, n = iter(events), 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        while block := list(itertools.islice(it, 4096)):
            f.write("\n".join(map(encode_event, block)) + "\n")
            n += len(block)
    return n


def read_jsonl(path: str | os.PathLike[str], what: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON-lines file (a trace, a
    history); an unreadable file or a line that is not JSON is a CheckError naming path:line."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CheckError(f"{path}:{lineno}: not UTF-8 text (a {what} is JSON lines): "
                                 f"{e.reason}") from None
            if not line.strip():
                continue
            yield lineno, json_value(line, path, lineno)


def json_value(text: str, path: str | os.PathLike[str], lineno: int | None = None) -> Any:
    """The JSON value of ``text`` (line ``lineno`` of ``path``, or the whole file): a CheckError
    ``path:line: not JSON`` for anything Python's parser refuses or cannot take (a number of
    5,000 digits, 100,000 nested brackets)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckError(f"{path}:{lineno or e.lineno}: not JSON: {e.msg}") from None
    except (ValueError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise CheckError(f"{path}{f':{lineno}' if lineno else ''}: not JSON this reader takes: "
                         f"{what}") from None


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON value in file ``path`` (a run's final.json); CheckError naming path:line."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CheckError(f"{path}:{line}: not UTF-8 text ({what} is JSON): {e.reason}") from None
    return json_value(text, path)


def read_trace(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of a trace.jsonl; a line that is not a JSON object is a CheckError naming it."""
    events = []
    for lineno, event in read_jsonl(path, "trace"):
        if not isinstance(event, dict) or "ts" not in event or "node" not in event:
            raise CheckError(f"{path}:{lineno}: a trace event needs at least ts and node")
        events.append(event)
    return events


def merge(event_lists: Iterable[Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """All events sorted by ``(ts, node)``; ties keep the order of the lists, then within each."""
    return sorted(itertools.chain.from_iterable(event_lists), key=_sort_key)
