"""The wire envelope: round trips, and every way bad bytes are turned into a WireError."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from nodes import wire
from nodes.wire import (
    MAX_MESSAGE_SIZE,
    BadField,
    BadSignature,
    BadVersion,
    Envelope,
    Malformed,
    Oversize,
    UnknownLab,
    UnknownType,
    WireError,
    decode,
    encode,
    sign,
    verify,
)

DROP_REASONS = {"malformed", "oversize", "bad_version", "unknown_lab", "unknown_type",
                "bad_signature"}


def env(**changes) -> Envelope:
    base = Envelope(lab="lab1", src="n1", dst="n2", id="n1-7", type="append",
                    body={"term": 3, "entries": [[1, b"x"]], "ok": True})
    return dataclasses.replace(base, **changes)


def raw(**fields) -> bytes:
    m = {"v": 1, "lab": "lab1", "src": "n1", "dst": "n2", "id": "m1", "type": "t", "body": {}}
    m.update(fields)
    for k in [k for k, v in m.items() if v is _DROP]:
        del m[k]
    return msgpack.packb(m, use_bin_type=True)


_DROP = object()


# -- round trips --------------------------------------------------------------

def test_round_trip_keeps_every_field():
    e = env(lc=42)
    assert decode(encode(e)) == e


def test_lc_is_optional_on_the_wire_and_defaults_to_zero():
    data = encode(env())
    assert "lc" not in msgpack.unpackb(data, raw=False)
    assert decode(data).lc == 0
    assert decode(raw(lc=9)).lc == 9


def test_encoding_is_deterministic():
    assert encode(env(lc=3)) == encode(env(lc=3))


def test_lab_and_type_filters_accept_matching_messages():
    e = env()
    assert decode(encode(e), lab="lab1", types={"append", "vote"}) == e


# -- rejections, each with its trace reason --------------------------------------

@pytest.mark.parametrize("data, exc", [
    (b"", Malformed),
    (b"\xc1", Malformed),                                   # reserved msgpack byte
    (msgpack.packb([1, 2]), Malformed),                      # not a map
    (msgpack.packb({1: 2}), Malformed),                      # non-str key (strict_map_key)
    (encode(env()) + b"\x00", Malformed),                    # trailing bytes
    (encode(env())[:-3], Malformed),                         # truncated
    (msgpack.packb(msgpack.ExtType(5, b"x")), Malformed),   # extension types refused
    (raw(v=2), BadVersion),
    (raw(v="1"), BadVersion),
    (raw(v=True), BadVersion),
    (raw(v=_DROP), BadField),
    (raw(src=""), BadField),
    (raw(dst=5), BadField),
    (raw(id="x" * 257), BadField),
    (raw(type=_DROP), BadField),
    (raw(body=[1]), BadField),
    (raw(body={b"k": 1}), BadField),                        # bytes key in body
    (raw(lc=-1), BadField),
    (raw(lc=1.5), BadField),
    (raw(lc=False), BadField),
    (raw(sig="text"), BadField),
    (raw(extra=1), Malformed),
])
def test_bad_messages_are_rejected_with_the_right_error(data, exc):
    with pytest.raises(exc) as info:
        decode(data)
    assert info.value.reason in DROP_REASONS


def test_reasons_match_the_trace_contract():
    assert Malformed.reason == BadField.reason == "malformed"
    assert Oversize.reason == "oversize"
    assert BadVersion.reason == "bad_version"
    assert UnknownLab.reason == "unknown_lab"
    assert UnknownType.reason == "unknown_type"
    assert BadSignature.reason == "bad_signature"
    assert issubclass(WireError, ValueError)


def test_bad_field_names_the_field():
    with pytest.raises(BadField) as info:
        decode(raw(dst=5))
    assert info.value.field == "dst"


def test_wrong_lab_is_unknown_lab():
    with pytest.raises(UnknownLab):
        decode(encode(env()), lab="other")


def test_type_outside_the_protocol_is_unknown_type():
    with pytest.raises(UnknownType):
        decode(encode(env()), types=frozenset({"vote"}))


def test_version_is_checked_before_lab_and_type():
    with pytest.raises(BadVersion):
        decode(raw(v=2, type="nope"), lab="other", types=())


def test_oversize_is_checked_before_parsing():
    with pytest.raises(Oversize):
        decode(b"\x00" * (MAX_MESSAGE_SIZE + 1))
    small = encode(env())
    with pytest.raises(Oversize):
        decode(small, max_size=len(small) - 1)
    assert decode(small, max_size=len(small)) == env()


def test_encode_refuses_what_the_peer_would_drop():
    with pytest.raises(Oversize):
        encode(env(body={"blob": b"x" * MAX_MESSAGE_SIZE}))


def test_encode_of_an_unencodable_body_is_malformed():
    with pytest.raises(Malformed):
        encode(env(body={"x": object()}))


def test_non_bytes_input_is_malformed():
    with pytest.raises(Malformed):
        decode("a string")  # type: ignore[arg-type]


def test_deep_nesting_is_malformed_not_a_crash():
    data = b"\x91" * 100_000 + b"\xc0"      # 100k nested one-element arrays
    with pytest.raises(Malformed):
        decode(data)


def test_max_message_size_is_one_mib():
    assert MAX_MESSAGE_SIZE == 1024 * 1024


# -- signatures ----------------------------------------------------------------

KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)


def test_signed_envelope_verifies_after_a_round_trip():
    signed = sign(env(lc=5), KEY)
    assert signed.sig is not None and len(signed.sig) == 64
    got = decode(encode(signed))
    assert got.sig == signed.sig
    verify(got, KEY.verify_key)


@pytest.mark.parametrize("change", [
    {"body": {"term": 4}}, {"src": "n3"}, {"dst": "n9"}, {"lab": "lab2"}, {"type": "vote"},
    {"id": "n1-8"}, {"lc": 6},
])
def test_any_change_breaks_the_signature(change):
    signed = sign(env(lc=5), KEY)
    with pytest.raises(BadSignature) as info:
        verify(dataclasses.replace(signed, **change), KEY.verify_key)
    assert info.value.reason == "bad_signature"


def test_wrong_key_unsigned_and_short_signatures_are_bad():
    signed = sign(env(), KEY)
    with pytest.raises(BadSignature):
        verify(signed, OTHER.verify_key)
    with pytest.raises(BadSignature):
        verify(env(), KEY.verify_key)
    with pytest.raises(BadSignature):
        verify(dataclasses.replace(signed, sig=signed.sig[:10]), KEY.verify_key)


# -- properties -------------------------------------------------------------------

names = st.text(min_size=1, max_size=20)
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | \
    st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
envelopes = st.builds(
    Envelope, lab=names, src=names, dst=names, id=names, type=names,
    body=st.dictionaries(st.text(max_size=8), values, max_size=5),
    lc=st.integers(0, wire.MAX_LC), sig=st.none() | st.binary(min_size=1, max_size=64))


@settings(max_examples=200, deadline=None)
@given(envelopes)
def test_round_trip_for_arbitrary_valid_envelopes(e):
    assert decode(encode(e), lab=e.lab, types={e.type}) == e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decode_raises_only_wireerror_on_arbitrary_bytes(data):
    try:
        decode(data, lab="lab1", types={"t"})
    except WireError as e:
        assert e.reason in DROP_REASONS


@settings(max_examples=200, deadline=None)
@given(envelopes, st.data())
def test_decode_raises_only_wireerror_on_truncations_and_flips(e, data):
    enc = encode(e)
    cut = data.draw(st.integers(0, len(enc)))
    pos = data.draw(st.integers(0, len(enc) - 1))
    flipped = bytearray(enc)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    for candidate in (enc[:cut], bytes(flipped)):
        try:
            decode(candidate, lab="lab1", types={"t"})
        except WireError as err:
            assert err.reason in DROP_REASONS


field_values = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | \
    st.text(max_size=300) | st.binary(max_size=70) | st.lists(st.integers(-9, 9), max_size=2) | \
    st.dictionaries(st.text(max_size=3) | st.binary(max_size=3), st.integers(-9, 9), max_size=2)
near_envelopes = st.fixed_dictionaries(
    {}, optional={k: field_values | st.just(good) for k, good in
                  [("v", 1), ("lab", "lab1"), ("src", "n1"), ("dst", "n2"), ("id", "m"),
                   ("type", "t"), ("body", {}), ("lc", 3), ("sig", b"s" * 64), ("x", 1)]})


@settings(max_examples=400, deadline=None)
@given(near_envelopes)
def test_decode_raises_only_wireerror_on_envelope_like_maps(m):
    data = msgpack.packb(m, use_bin_type=True)
    try:
        got = decode(data, lab="lab1", types={"t"})
    except WireError as e:
        assert e.reason in DROP_REASONS
    else:
        # Whatever passes is a well-formed envelope of this lab and a known type.
        assert got.lab == "lab1" and got.type == "t" and isinstance(got.body, dict)
        assert decode(encode(got)) == got
