"""Jepsen's ``history.edn`` as a zlab history (``zlab check --history FILE --format edn``).

A Jepsen history is a sequence of op maps (plain, or tagged ``#jepsen.history.Op``),
either one a line or inside one vector::

    {:type :invoke, :f :write, :value [3 4], :time 1203000, :process 0, :index 8}
    {:type :ok, :f :write, :value [3 4], :time 1711000, :process 0, :index 9}

The mapping (docs/checkers.md, "Histories from Jepsen"):

* ``:type``, ``:f``: keyword names (``:invoke`` -> ``invoke``);
* ``:process``: an integer stays one, a keyword (``:nemesis``) becomes its name;
  the nemesis's ops are not client operations and are left out, as Jepsen's
  checkers do;
* ``:time`` (nanoseconds since the test began) -> ``ts`` in seconds;
* ``:value``: for a register test, the register's value (``cas``: ``[old new]``);
  for an ``independent`` test every value is a ``[key value]`` tuple, which
  becomes ``key`` and ``value``. A history is taken as independent when every
  op's value is such a pair (and every ``cas`` value's second half is itself
  ``[old new]``); otherwise all ops act on one register, key ``null``;
* ``:error`` on a ``:fail`` or ``:info`` is kept, as text when it is not a keyword
  (``[:duplicate-key "..."]``).

Keywords anywhere in a value become their names; lists and vectors become lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.errors import CheckError
from lab.history import validated

OP_TAG = "jepsen.history.Op"
NANOS = 1e9


def _plain(x: Any) -> Any:
    """An EDN value as JSON-like Python: keywords and symbols as names, sequences as lists,
    maps with string keys, sets as sorted lists."""
    import edn_format

    if isinstance(x, edn_format.Keyword | edn_format.Symbol):
        return x.name
    if isinstance(x, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in x.items()}
    if _seq(x):
        return [_plain(v) for v in x]
    if isinstance(x, set | frozenset):
        return sorted((_plain(v) for v in x), key=repr)
    return x


def parse_ops(text: str, source: str = "history.edn") -> list[dict[str, Any]]:
    """The op maps of an EDN history text, their keys as plain names; CheckError if it is not EDN
    or not a sequence of maps."""
    import edn_format

    edn_format.add_tag(OP_TAG, lambda m: m)      # a record prints as a tagged map: read it as one
    try:
        forms = edn_format.loads_all(text, write_ply_tables=False)
    except (edn_format.EDNDecodeError, NotImplementedError, ValueError) as e:
        raise CheckError(f"{source}: not an EDN history: {e}") from None
    if len(forms) == 1 and _seq(forms[0]):
        forms = list(forms[0])                  # the whole history as one vector
    ops = []
    for n, form in enumerate(forms):
        if not isinstance(form, Mapping):
            raise CheckError(f"{source}: op {n}: expected a map, got {edn_format.dumps(form)[:80]}")
        ops.append({str(_plain(k)): v for k, v in form.items()})
    return ops


def _seq(v: Any) -> bool:
    """An EDN list or vector (edn_format's immutable lists are Sequences, not lists)."""
    return isinstance(v, Sequence) and not isinstance(v, str | bytes)


def _pair(v: Any) -> bool:
    return _seq(v) and len(v) == 2


def independent(ops: list[dict[str, Any]]) -> bool:
    """Whether every client op's value is a ``[key value]`` tuple (Jepsen's ``independent``)."""
    client = [op for op in ops if _plain(op.get("process")) not in ("nemesis",)]
    return bool(client) and all(
        _pair(op.get("value")) and (_plain(op.get("f")) != "cas" or op.get("value")[1] is None
                                    or _pair(op["value"][1]))
        for op in client)


def _error(e: Any) -> Any:
    import edn_format

    if e is None or isinstance(e, str):
        return e
    if isinstance(e, edn_format.Keyword):
        return e.name
    return edn_format.dumps(e)


def to_event(op: dict[str, Any], keyed: bool) -> dict[str, Any]:
    """One Jepsen op as a zlab history event (before validation)."""
    value = op.get("value")
    key = None
    if keyed and _pair(value):
        key, value = _plain(value[0]), value[1]
    time = op.get("time")
    ev: dict[str, Any] = {"process": _plain(op.get("process")), "type": _plain(op.get("type")),
                          "f": _plain(op.get("f")), "key": key, "value": _plain(value),
                          "ts": time / NANOS if isinstance(time, int | float) and not isinstance(time, bool)
                          else time}
    if "error" in op:
        ev["error"] = _error(op["error"])
    for name in ("process", "type", "f"):
        if ev[name] is None:
            del ev[name]                        # the validator names what is missing
    if ev["ts"] is None:
        del ev["ts"]
    return ev


def load_edn_history(path: str | Path) -> list[dict[str, Any]]:
    """Read Jepsen's ``history.edn`` into validated zlab history events; CheckError
    ``path: op N: what`` (N is the op's ``:index`` when it has one)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CheckError(f"{path}: cannot read history: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CheckError(f"{path}: not UTF-8 text: {e.reason}") from None
    ops = parse_ops(text, str(path))
    keyed = independent(ops)
    return validated((f"{path}: op {op.get('index', n)}", to_event(op, keyed))
                     for n, op in enumerate(ops))
