"""Raft's command codec (nodes/protocols/raft.py): the hand-built ``encode_command`` fast path,
``_decode`` on the JSON scanner, and the chain hash of docs/trace.md.

Every node hashes the bytes a leader encoded, so the fast path must give exactly the canonical
form: ``json.dumps(cmd, sort_keys=True, separators=(",", ":"))`` of the op's CMD_FIELDS.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.protocols import kv
from nodes.protocols.raft import CMD_FIELDS, _decode, _encode_flat, chain_hash, encode_command

NASTY = ['"', "\\", '\\"', "\x00", "\x1f", "\x7f", "\n", "\u2028", "\ud800", "é", "日本", "\U0001f600",
         "%s", "{}", ",", ":", "null", ""]
texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=10),
                  st.text(alphabet=st.characters(codec=None), max_size=5))
ints = st.one_of(st.integers(), st.sampled_from([0, -1, 2**63, -(2**64), 10**40]))
flat = st.one_of(ints, texts, st.none())
floats = st.floats(allow_nan=False, allow_infinity=False)
leaf = st.one_of(flat, st.booleans(), floats)
nested = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                st.dictionaries(texts, c, max_size=3)), max_leaves=8)
fields = st.sampled_from(CMD_FIELDS + ("other", "op", "id"))   # not every key enters the log
flat_ops = st.dictionaries(fields, flat, max_size=7)
any_ops = st.dictionaries(fields, st.one_of(flat, nested), max_size=7)
# ops the kv state machine accepts, so they decode back
valid_ops = st.fixed_dictionaries(
    {"f": st.sampled_from(["read", "write"]), "key": st.one_of(texts, st.integers())},
    optional={"value": st.one_of(flat, nested), "client": texts, "seq": st.integers(min_value=0)})
cas_ops = st.fixed_dictionaries(
    {"f": st.just("cas"), "key": st.one_of(texts, st.integers()),
     "value": st.lists(st.one_of(flat, nested), min_size=2, max_size=2)},
    optional={"client": texts, "seq": st.integers(min_value=0)})

CASES = settings(max_examples=300, deadline=None)


def canonical(op: dict[str, Any]) -> str:
    """The contract, written out: the op's log fields as sorted, spaceless JSON."""
    return json.dumps({k: op[k] for k in CMD_FIELDS if k in op}, sort_keys=True, separators=(",", ":"))


def reference_decode(encoded: Any) -> dict[str, Any] | None:
    """_decode as it was before the scanner fast path: json.loads, None if not a valid op."""
    try:
        op = json.loads(encoded)
    except ValueError:
        return None
    return op if kv.validate(op) is None else None


def outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    """What ``fn(arg)`` gives, or the type of what it raises: the fast path must raise alike."""
    try:
        return "ok", fn(arg)
    except Exception as e:  # noqa: BLE001 -- compared, not hidden
        return "raised", type(e)


# the shape of nearly every client op, which encode_flat writes out on its own path: a read,
# or a write of an int, perhaps with a field that does not enter the log
usual_ops = st.fixed_dictionaries({"client": texts, "f": texts, "key": texts, "seq": ints},
                                  optional={"value": flat, "other": flat})


@CASES
@given(st.one_of(flat_ops, usual_ops))
def test_fast_path_equals_canonical_json(op: dict[str, Any]) -> None:
    flat_form = _encode_flat(op)
    assert flat_form is not None            # strings, ints and null all take the fast path
    assert flat_form[0] == canonical(op) == encode_command(op)
    assert flat_form[1] == {k: op[k] for k in CMD_FIELDS if k in op}
    assert json.loads(flat_form[0]) == flat_form[1]     # "what _decode makes of it"


@CASES
@given(any_ops)
def test_encode_command_equals_canonical_json(op: dict[str, Any]) -> None:
    assert encode_command(op) == canonical(op)


@given(st.dictionaries(fields, st.one_of(st.booleans(), floats, st.lists(flat, max_size=2)), min_size=1)
       .filter(lambda op: any(k in CMD_FIELDS for k in op)))
@settings(max_examples=100, deadline=None)
def test_bools_floats_and_lists_leave_the_fast_path(op: dict[str, Any]) -> None:
    assert _encode_flat(op) is None
    assert encode_command(op) == canonical(op)


def test_bool_is_not_encoded_as_an_int() -> None:
    assert encode_command({"f": "write", "key": 1, "value": True}) == '{"f":"write","key":1,"value":true}'
    assert encode_command({"f": "write", "key": 1, "value": 1.0}) == '{"f":"write","key":1,"value":1.0}'
    assert encode_command({"seq": 3, "key": 'a"\\é', "f": "read", "x": 9}) == \
        '{"f":"read","key":"a\\"\\\\\\u00e9","seq":3}'
    # the same in the shape of a usual op, which encode_flat writes out on a path of its own
    usual = {"client": "c", "f": "write", "key": "k", "seq": 4}
    assert encode_command({**usual, "value": True}) == '{"client":"c","f":"write","key":"k","seq":4,"value":true}'
    assert encode_command({**usual, "seq": True}) == '{"client":"c","f":"write","key":"k","seq":true}'
    assert _encode_flat({**usual, "seq": False}) is None


@CASES
@given(st.one_of(valid_ops, cas_ops))
def test_decode_inverts_encode(op: dict[str, Any]) -> None:
    encoded = encode_command(op)
    assert _decode(encoded) == json.loads(encoded) == op


@CASES
@given(any_ops)
def test_decode_agrees_with_json_loads_on_any_encoded_op(op: dict[str, Any]) -> None:
    encoded = encode_command(op)
    assert outcome(_decode, encoded) == outcome(reference_decode, encoded)


MALFORMED = ["", " ", "{", "}", "{}", "[]", "null", "1", '"x"', '{"f":"read"', '{"f":"read","key":1}x',
             '{"f":"read","key":1} {}', '{"f":"nope","key":1}', '{"f":"read","key":true}',
             '{"f":"read","key":[1]}', '{"f":"cas","key":1,"value":[1]}', "\ufeff{}",
             '{"f":"read","key":1,}', "{'f':'read','key':1}", "NaN", '{"f":"read","key":NaN}',
             '\ud800', '{"f":"read","key":"\\ud800"}', '{"f":"read","key":"\x00"}']
# Inputs the scanner refuses but json.loads accepts: the fallback must still decode them.
PADDED = [' {"f":"read","key":1}', '{"f":"read","key":1} ', '\n{"f":"read","key":1}\t',
          '{ "f" : "read" , "key" : 1 }', '{"key":1,"f":"read"}']


def test_decode_malformed_and_padded_like_json_loads() -> None:
    for s in MALFORMED + PADDED:
        assert _decode(s) == reference_decode(s), s
    for s in MALFORMED:
        if s not in ('{"f":"read","key":1}', '{"f":"read","key":"\\ud800"}'):
            assert _decode(s) is None or kv.validate(json.loads(s)) is None, s
    for s in PADDED:
        assert _decode(s) == {"f": "read", "key": 1}, s
    assert _decode('{"f":"read","key":"\\ud800"}') == {"f": "read", "key": "\ud800"}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.text(alphabet='{}[]":,0123456789.-eE ntruflasx\\', max_size=30),
                 valid_ops.map(encode_command).flatmap(
                     lambda s: st.integers(0, len(s)).map(lambda i: s[:i] + s[i + 1:]))))
def test_decode_of_arbitrary_text_matches_json_loads(s: str) -> None:
    assert outcome(_decode, s) == outcome(reference_decode, s)


def test_decode_of_an_op_with_an_unhashable_f_is_none() -> None:
    """_decode's contract: "None if it is not a valid op". An entry whose ``f`` is a list or a map
    is not one, but kv.validate tests ``op.get("f") not in OPS`` (a frozenset) and raises
    TypeError, so a follower applying such an entry raises instead of answering bad_command.
    (Found by test_decode_agrees_with_json_loads_on_any_encoded_op; predates the fast path.)"""
    for s in ('{"f":[],"key":1}', '{"f":{},"key":1}'):
        assert _decode(s) is None, s


def expected_hash(prev: str, term: int, command: Any) -> str:
    """docs/trace.md: blake2b(json.dumps([h[i-1], term, command], sort_keys, no spaces), 8 bytes)."""
    data = json.dumps([prev, term, command], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(data.encode(), digest_size=8).hexdigest()


def test_chain_hash_known_values() -> None:
    op = {"f": "write", "key": "x", "value": 1, "client": "c1", "seq": 7}
    encoded = encode_command(op)
    assert encoded == '{"client":"c1","f":"write","key":"x","seq":7,"value":1}'
    h1 = chain_hash("", 1, encoded)
    assert h1 == hashlib.blake2b(
        b'["",1,{"client":"c1","f":"write","key":"x","seq":7,"value":1}]', digest_size=8).hexdigest()
    assert h1 == expected_hash("", 1, op)
    h2 = chain_hash(h1, 2, None)            # a leader's no-op
    assert h2 == hashlib.blake2b(f'["{h1}",2,null]'.encode(), digest_size=8).hexdigest()
    assert h2 == expected_hash(h1, 2, None)
    assert len(h1) == len(h2) == 16 and h1 != h2
    assert chain_hash("", 1, encoded) == h1          # stable


@CASES
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=2**40), st.one_of(st.none(), any_ops)),
                min_size=1, max_size=6))
def test_chain_hash_follows_the_documented_formula(entries: list[tuple[int, Any]]) -> None:
    h = ""
    for term, op in entries:
        encoded = None if op is None else encode_command(op)
        cmd = None if op is None else json.loads(canonical(op))
        want = expected_hash(h, term, cmd)
        h = chain_hash(h, term, encoded)
        assert h == want
