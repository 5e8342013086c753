"""The wire envelope every node-to-node message travels in (DESIGN.md, "Wire envelope").

One msgpack map: ``{v, lab, src, dst, id, type, body}``, plus ``lc`` (the
sender's Lamport clock, left out when 0) and ``sig`` (an ed25519 signature,
only where a protocol signs, e.g. PBFT).

:func:`decode` is the gate between the network and a core: whatever bytes
arrive, it either returns a well-formed :class:`Envelope` or raises a
:class:`WireError` whose ``reason`` is the ``drop`` reason of docs/trace.md,
so the agent can drop, count and trace the message without ever stopping.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:  # pynacl is only needed where a protocol signs
    from nacl.signing import SigningKey, VerifyKey

VERSION = 1
MAX_MESSAGE_SIZE = 1 << 20          # bytes; the agent sets zmq.MAXMSGSIZE to this too
MAX_NAME_LEN = 256                  # chars of lab, src, dst, id and type
MAX_LC = (1 << 63) - 1              # a Lamport clock is an int64 on the wire
MAX_SIG_LEN = 256                   # bytes; ed25519 signatures are 64

_NAME_FIELDS = ("lab", "src", "dst", "id", "type")
_FIELDS = frozenset(("v", *_NAME_FIELDS, "body", "lc", "sig"))


class WireError(ValueError):
    """A message that must be dropped. ``reason`` is its trace drop reason."""

    reason = "malformed"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class Malformed(WireError):
    """Not msgpack, not a map, or a map that is not an envelope."""

    reason = "malformed"


class BadField(Malformed):
    """An envelope field has the wrong type or size; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Oversize(WireError):
    reason = "oversize"


class BadVersion(WireError):
    reason = "bad_version"


class UnknownLab(WireError):
    reason = "unknown_lab"


class UnknownType(WireError):
    reason = "unknown_type"


class BadSignature(WireError):
    reason = "bad_signature"


@dataclasses.dataclass(frozen=True)
class Envelope:
    lab: str
    src: str
    dst: str
    id: str
    type: str
    body: dict[str, Any]
    lc: int = 0
    sig: bytes | None = None
    v: int = VERSION


def _as_map(env: Envelope, *, with_sig: bool) -> dict[str, Any]:
    # Fixed key order: encoding the same envelope always gives the same bytes,
    # which is what a signature is computed over.
    out: dict[str, Any] = {"v": env.v, "lab": env.lab, "src": env.src, "dst": env.dst,
                           "id": env.id, "type": env.type, "body": env.body}
    if env.lc:
        out["lc"] = env.lc
    if with_sig and env.sig is not None:
        out["sig"] = env.sig
    return out


_packers = threading.local()


def packb(obj: Any) -> bytes:
    """``msgpack.packb(obj, use_bin_type=True)``, with a Packer kept per thread: packb makes a new
    one per call, which costs more than packing a small message. Raises what packb raises."""
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)


def _pack(obj: Any) -> bytes:
    try:
        return packb(obj)
    except (TypeError, ValueError, OverflowError) as e:
        raise Malformed(f"cannot encode: {e}") from None


def encode(env: Envelope, *, max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """The envelope's bytes. Raises :class:`Oversize` rather than send what the peer would drop,
    and :class:`Malformed` for a body msgpack cannot carry."""
    data = _pack(_as_map(env, with_sig=True))
    if len(data) > max_size:
        raise Oversize(f"message of {len(data)} bytes is above the {max_size}-byte limit")
    return data


def canonical(env: Envelope) -> bytes:
    """The bytes a signature covers: the envelope's encoding without ``sig``."""
    return _pack(_as_map(env, with_sig=False))


def _reject_ext(code: int, data: bytes) -> Any:
    raise Malformed(f"msgpack extension type {code} is not allowed")


def _name(m: dict[Any, Any], field: str) -> str:
    value = m.get(field)
    if value is None:
        raise BadField(field, "missing")
    if not isinstance(value, str):
        raise BadField(field, f"expected a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME_LEN:
        raise BadField(field, f"expected 1 to {MAX_NAME_LEN} characters, got {len(value)}")
    return value


def decode(data: bytes, *, lab: str | None = None, types: Collection[str] | None = None,
           max_size: int = MAX_MESSAGE_SIZE) -> Envelope:
    """Parse and validate one message. Raises only :class:`WireError` subclasses.

    ``lab`` (when given) must match the envelope's lab, ``types`` (when given)
    must hold its type. Checks run cheapest and most telling first: size,
    msgpack, version, lab, field types, message type.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise Malformed(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise Oversize(f"message of {len(data)} bytes is above the {max_size}-byte limit")
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                            ext_hook=_reject_ext)
    except WireError:
        raise
    except Exception as e:  # msgpack raises many kinds (ExtraData, FormatError, StackError, ...)
        raise Malformed(f"not msgpack: {type(e).__name__}: {e}") from None
    if not isinstance(m, dict):
        raise Malformed(f"expected a map, got {type(m).__name__}")
    v = m.get("v")
    if v is None:
        raise BadField("v", "missing")
    if type(v) is not int or v != VERSION:
        raise BadVersion(f"version {v!r} is not {VERSION}")
    env_lab = _name(m, "lab")
    if lab is not None and env_lab != lab:
        raise UnknownLab(f"lab {env_lab!r} is not {lab!r}")
    unknown = [k for k in m if k not in _FIELDS]
    if unknown:
        raise Malformed(f"unknown envelope field {str(unknown[0])[:40]!r}")
    src, dst, mid, mtype = (_name(m, f) for f in ("src", "dst", "id", "type"))
    body = m.get("body")
    if not isinstance(body, dict):
        raise BadField("body", f"expected a map, got {type(body).__name__}")
    if not all(isinstance(k, str) for k in body):
        raise BadField("body", "keys must be strings")
    lc = m.get("lc", 0)
    if type(lc) is not int or not 0 <= lc <= MAX_LC:
        raise BadField("lc", f"expected an int from 0 to {MAX_LC}, got {lc!r}")
    sig = m.get("sig")
    if sig is not None and (not isinstance(sig, bytes) or not 0 < len(sig) <= MAX_SIG_LEN):
        raise BadField("sig", f"expected 1 to {MAX_SIG_LEN} bytes")
    if types is not None and mtype not in types:
        raise UnknownType(f"message type {mtype!r} is not one this protocol knows")
    return Envelope(lab=env_lab, src=src, dst=dst, id=mid, type=mtype, body=body, lc=lc, sig=sig)


def sign(env: Envelope, key: SigningKey) -> Envelope:
    """``env`` with ``sig``: ed25519 over :func:`canonical` (so lab, src, dst, id and type are signed too)."""
    return dataclasses.replace(env, sig=bytes(key.sign(canonical(env)).signature))


def verify(env: Envelope, key: VerifyKey) -> None:
    """Raise :class:`BadSignature` unless ``env.sig`` is ``key``'s signature of ``env``."""
    from nacl.exceptions import BadSignatureError

    if env.sig is None:
        raise BadSignature(f"message {env.id} from {env.src} is not signed")
    try:
        key.verify(canonical(env), env.sig)
    except (BadSignatureError, ValueError, TypeError) as e:
        raise BadSignature(f"message {env.id} from {env.src}: {e}") from None
