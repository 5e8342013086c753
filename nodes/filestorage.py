"""The agent's durable storage: an append-only msgpack write-ahead log, fsync'd on flush().

Layout of ``<dir>/wal``: a sequence of records, each ``len:u32 crc32:u32 payload``
(little-endian), where ``payload`` is a msgpack list ``[op, name, arg]``:

* ``["put", key, value]``
* ``["append", log, [entries...]]``
* ``["trunc", log, length]``
* ``["snap", kv, logs]`` -- only ever first, written by compaction

The length and checksum let recovery tell a torn or garbled tail (a write cut by
SIGKILL or power loss) from good records: it keeps every record before the first
bad one and cuts the file there, so appends continue from a clean end.

Writes are buffered until :meth:`FileStorage.flush`, which does one ``write`` and
one sync for everything since the last flush: the agent calls it once per
event-loop iteration (group commit), before any message or reply leaves.

The file is kept zeros ahead of the log's end (written zeros, not ``fallocate``'s
unwritten extents; each step as much as the log holds, 64 KiB to ``prealloc``, so a
node that writes little writes few zeros), and a flush writes into them and syncs with
``fdatasync``: the file's size and blocks do not change, so the sync is the data and
a cache flush, without an ext4 journal commit (about half the time of an appending
``fsync`` on this project's VM disk). Only the flush that grows the allocation commits
the new size. Recovery reads a zero length as the end of the log; zeros after it are
allocation, not a torn tail.

Values come back as a fresh msgpack round-trip of what was written, so a core sees
the same types (lists, not tuples) before and after a restart, and cannot change
stored state by mutating what it read.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

import msgpack

from nodes.wire import packb

_HEADER = struct.Struct("<II")
_MAX_RECORD = 256 * 1024 * 1024   # a length above this is garbage, not a record
# Zeros written ahead of the log's end (see the module doc), at most this many a step. A step
# costs one write of the zeros and a sync of them: about 1.5 ms for 1 MiB here, which holds
# 7,000-15,000 Raft writes. The first steps are smaller (the log's size, from _MIN_STEP up), so
# the many nodes of a large lab that write little do not each write a whole PREALLOC of zeros.
PREALLOC = 1 << 20
_MIN_STEP = 64 << 10
_sync_data = getattr(os, "fdatasync", os.fsync)     # no fdatasync (macOS): fsync


_pack = packb


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


_APPEND_HEAD = b"\x93" + _pack("append")    # a 3-element array, then its first element


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _array_header_len(first: int) -> int:
    """Bytes of the header of a packed msgpack array, from its first byte."""
    return 1 if first < 0xdc else 3 if first == 0xdc else 5


class FileStorage:
    """Implements nodes.protocols.core.Storage on ``<dir>/wal``."""

    def __init__(self, directory: str, *, compact_bytes: int = 64 * 1024 * 1024, fsync: bool = True,
                 prealloc: int | None = None) -> None:
        self.dir = directory
        self.path = os.path.join(directory, "wal")
        self.compact_bytes = compact_bytes       # compact once the WAL grows past this (0: never)
        self.fsync_enabled = fsync               # False only for tests that measure other things
        # Zeros kept ahead of the end (0: the file ends where the log does, synced with fsync).
        # It only makes a sync cheaper, so without fsync it is off unless asked for.
        self.prealloc = (PREALLOC if fsync else 0) if prealloc is None else prealloc
        self._kv: dict[str, bytes] = {}          # key -> packed value
        self._logs: dict[str, list[Any]] = {}
        self._pending: list[bytes] = []
        # Appends to one log since the last record, each entry already packed: a leader appends
        # an entry per client request, and one record for the lot costs a fraction of one each.
        self._appending: str | None = None
        self._appended: list[bytes] = []       # packed entries, concatenated into the record
        self._appended_n = 0
        # Appended entries not yet decoded into _logs: log -> (packed arrays, how many entries).
        # A core keeps its own copy of its log and reads storage's only to recover, so the
        # decode is put off until a read or truncate needs it (and is mostly never done).
        self._unread: dict[str, tuple[list[bytes], int]] = {}
        self.recovered_records = 0
        self.torn_bytes = 0                      # bytes cut from the tail at recovery
        self.fsyncs = 0
        self.bytes_written = 0
        self._size = 0                           # where the log ends: the next record goes here
        os.makedirs(directory, exist_ok=True)
        self._recover()
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._allocated = os.fstat(self._fd).st_size     # the file's size: the log, then zeros

    @property
    def size(self) -> int:
        """Bytes of log in the WAL file (the file may be longer: zeros preallocated)."""
        return self._size

    # -- Storage protocol -------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        packed = self._kv.get(key)
        return default if packed is None else _unpack(packed)

    def put(self, key: str, value: Any) -> None:
        self._seal_appends()
        packed = _pack(value)
        self._kv[key] = packed
        self._record(["put", key, value])

    def log_append(self, name: str, entries: list[Any]) -> None:
        if not entries:
            return
        packed = _pack(entries)      # now: a bad entry raises here, and later changes do not count
        if self._appending != name:
            self._seal_appends()
            self._appending = name
        self._appended.append(packed[_array_header_len(packed[0]):])
        self._appended_n += len(entries)

    def _seal_appends(self) -> None:
        """Turn the appends gathered since the last record into one ``append`` record."""
        name = self._appending
        if name is None:
            return
        # The msgpack of ["append", name, entries], spliced from the entries packed one call each.
        array = b"".join([_array_header(self._appended_n), *self._appended])
        rec = b"".join([_APPEND_HEAD, _pack(name), array])
        chunks, count = self._unread.get(name) or ([], 0)
        chunks.append(array)
        self._unread[name] = chunks, count + self._appended_n
        self._appended, self._appended_n, self._appending = [], 0, None
        self._pending.append(self._frame(rec))

    def _log(self, name: str) -> list[Any]:
        """The stored copy of a log, decoded from the bytes written (one encode serves both)."""
        self._seal_appends()
        log = self._logs.setdefault(name, [])
        unread = self._unread.pop(name, None)
        if unread is not None:
            for array in unread[0]:
                log.extend(_unpack(array))
        return log

    def log_truncate(self, name: str, length: int) -> None:
        self._seal_appends()
        unread = self._unread.get(name)
        decoded = self._logs.get(name) or []
        if length >= len(decoded) + (unread[1] if unread else 0):
            return
        if length <= len(decoded):
            # Every entry not decoded yet lies beyond the cut: dropped as bytes, never decoded
            # (a PBFT replica rewrites its whole log at each stable checkpoint: log_truncate 0).
            self._unread.pop(name, None)
            del decoded[length:]
        else:
            del self._log(name)[length:]
        self._record(["trunc", name, length])

    def log_read(self, name: str) -> list[Any]:
        # Entries are only ever replaced, never mutated in place, so a shallow copy
        # is enough for the list; cores treat entries as values.
        return list(self._log(name))

    # -- durability -----------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._pending) or self._appending is not None

    def flush(self) -> bool:
        """Write and fsync everything since the last flush. Returns whether there was anything."""
        self._seal_appends()
        if not self._pending:
            return False
        data = b"".join(self._pending)
        self._pending.clear()
        end = self._size + len(data)
        grown = end > self._allocated
        step = min(self.prealloc, max(_MIN_STEP, end)) if grown else 0
        if step:
            # The zeros reach the disk with this flush's sync, which commits the new size once.
            self._write_at(bytes(step), end)
        self._write_at(data, self._size)
        if self.fsync_enabled:
            # In the preallocated zeros only the data changed: fdatasync. Past them, the size too.
            _sync_data(self._fd) if self.prealloc else os.fsync(self._fd)
        self._allocated = max(self._allocated, end + step)
        self.fsyncs += 1
        self.bytes_written += len(data)
        self._size = end
        if self.compact_bytes and self._size > self.compact_bytes:
            self.compact()
        return True

    def compact(self) -> None:
        """Rewrite the WAL as one snapshot record (write, fsync, rename, fsync the directory)."""
        self.flush_pending_only()
        for name in list(self._unread):
            self._log(name)
        snap = _pack(["snap", {k: _unpack(v) for k, v in self._kv.items()}, self._logs])
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self._frame(snap))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fsync_dir()
        os.close(self._fd)
        self._open()
        self._size = self._allocated        # the snapshot alone: the next flush preallocates again

    def flush_pending_only(self) -> None:
        self._seal_appends()
        if self._pending:
            saved, self.compact_bytes = self.compact_bytes, 0
            try:
                self.flush()
            finally:
                self.compact_bytes = saved

    def close(self) -> None:
        if self._fd >= 0:
            self.flush_pending_only()
            os.close(self._fd)
            self._fd = -1

    # -- internals --------------------------------------------------------------------
    def _write_at(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def _record(self, rec: list[Any]) -> None:
        self._pending.append(self._frame(_pack(rec)))

    @staticmethod
    def _frame(payload: bytes) -> bytes:
        return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload

    def _apply(self, rec: list[Any]) -> None:
        op, name, arg = rec
        if op == "put":
            self._kv[name] = _pack(arg)
        elif op == "append":
            self._logs.setdefault(name, []).extend(arg)
        elif op == "trunc":
            del self._logs.setdefault(name, [])[arg:]
        elif op == "snap":
            self._kv = {k: _pack(v) for k, v in name.items()}
            self._logs = {k: list(v) for k, v in arg.items()}
        else:
            raise ValueError(f"unknown WAL record {op!r}")

    def _recover(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        pos, good = 0, 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if length == 0 or length > _MAX_RECORD or end > len(data):
                break       # a zero length: the end of the log (preallocated zeros follow)
            payload = data[pos + _HEADER.size:end]
            if zlib.crc32(payload) != crc:
                break
            try:
                self._apply(_unpack(payload))
            except Exception:  # noqa: BLE001 -- a record that does not decode ends the good prefix
                break
            pos = good = end
            self.recovered_records += 1
        self._size = good
        if good < len(data) and data.count(0, good) < len(data) - good:
            self.torn_bytes = len(data) - good
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
