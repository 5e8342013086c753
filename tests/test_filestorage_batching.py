"""FileStorage's batched appends and lazy log decode (nodes/filestorage.py) against a model.

Consecutive appends to one log become one WAL record and are decoded only when read. The model
is MemoryStorage (the simulator's storage, the same Storage contract); after every flush and
reopen, and after a torn tail, FileStorage must hold exactly one of the model's states.
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nodes.filestorage import FileStorage
from nodes.storage import MemoryStorage

LOGS = ("log", "a", "b")
KEYS = ("hard", "k", "é")
leaf = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.text(max_size=6), st.none(),
                 st.booleans(), st.floats(allow_nan=False), st.binary(max_size=4))
values = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                st.dictionaries(st.text(max_size=3), c, max_size=3)),
                      max_leaves=5)
# Raft-shaped entries mostly, and now and then 16 or more at once (array headers of 1 and 3 bytes;
# 5 bytes in test_array_header_sizes).
entry = st.one_of(st.tuples(st.integers(0, 99), st.one_of(st.none(), st.text(max_size=8))).map(list),
                  values)
entries = st.one_of(st.lists(entry, max_size=4),
                    st.integers(14, 20).map(lambda n: [[1, str(i)] for i in range(n)]))

ops = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(LOGS), entries),
    st.tuples(st.just("append"), st.sampled_from(LOGS), entries),
    st.tuples(st.just("append"), st.sampled_from(LOGS), st.lists(entry, min_size=1, max_size=2)),
    st.tuples(st.just("put"), st.sampled_from(KEYS), values),
    st.tuples(st.just("trunc"), st.sampled_from(LOGS), st.integers(0, 30)),
    st.tuples(st.just("read"), st.sampled_from(LOGS), st.none()),
    st.tuples(st.just("flush"), st.none(), st.none()),
    st.tuples(st.just("reopen"), st.none(), st.none()),
)
CASES = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _state(s: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return {k: s.get(k, "<absent>") for k in KEYS}, {n: s.log_read(n) for n in LOGS}


def _open(d: str, compact: int, prealloc: int = 0) -> FileStorage:
    return FileStorage(d, compact_bytes=compact, fsync=False, prealloc=prealloc)


def _run(fs: FileStorage, model: MemoryStorage, op: tuple[str, Any, Any]) -> None:
    kind, name, arg = op
    if kind == "append":
        given_entries = copy.deepcopy(arg)
        fs.log_append(name, given_entries)
        model.log_append(name, arg)
        if given_entries and isinstance(given_entries[0], list):
            given_entries[0].append("mutated after the append")    # must not reach storage
    elif kind == "put":
        fs.put(name, arg)
        model.put(name, arg)
    elif kind == "trunc":
        fs.log_truncate(name, arg)
        model.log_truncate(name, arg)
    elif kind == "read":
        assert fs.log_read(name) == model.log_read(name)


@CASES
@given(script=st.lists(ops, max_size=25), compact=st.sampled_from([0, 0, 300, 5000]),
       prealloc=st.sampled_from([0, 64, 4096]))
def test_reopened_storage_equals_the_model(script: list[Any], compact: int, prealloc: int) -> None:
    model = MemoryStorage()
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, compact, prealloc)
        for op in script:
            if op[0] == "flush":
                fs.flush()
                assert not fs.dirty
            elif op[0] == "reopen":
                fs.flush()
                fs.close()
                fs = _open(d, compact, prealloc)
                assert fs.torn_bytes == 0
            else:
                _run(fs, model, op)
            assert _state(fs) == _state(model)        # reads (and lazy decode) mid-batch agree
        fs.flush()
        fs.close()
        again = _open(d, compact, prealloc)
        try:
            assert again.torn_bytes == 0
            assert _state(again) == _state(model)
        finally:
            again.close()


@CASES
@given(script=st.lists(ops.filter(lambda o: o[0] not in ("read", "reopen")), max_size=20),
       batch=st.lists(st.lists(entry, min_size=1, max_size=3), min_size=1, max_size=6),
       log=st.sampled_from(LOGS), cut=st.floats(0, 1, exclude_min=True),
       prealloc=st.sampled_from([0, 4096]))
@example(script=[], batch=[[0]], log="log", cut=0.0625, prealloc=4096)   # its last byte is a zero
def test_torn_batch_is_lost_whole_and_nothing_before_it(script: list[Any], batch: list[Any],
                                                       log: str, cut: float, prealloc: int) -> None:
    """Appends to one log between two flushes are one record: cutting any number of its bytes
    (the file's tail; with zeros preallocated, those bytes left zero) loses the whole batch,
    never an entry before it, and reopening never raises."""
    model = MemoryStorage()
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0, prealloc)
        for op in script:
            if op[0] == "flush":
                fs.flush()
            else:
                _run(fs, model, op)
        fs.flush()
        before, size = _state(model), fs.size
        for chunk in batch:                     # many appends, one log, one flush
            _run(fs, model, ("append", log, chunk))
        fs.flush()
        after, full = _state(model), fs.size
        fs.close()
        k = max(1, round(cut * (full - size)))
        with open(fs.path, "r+b") as f:
            if prealloc:
                # A write that left zeros where the record has zeros anyway tore nothing: the
                # torn part must hold a byte the record needs (its length is never zero).
                record = f.read()[size:full]
                while not any(record[-k:]):
                    k += 1
                f.seek(full - k)
                f.write(bytes(k))
            else:
                f.truncate(full - k)
        file_size = os.path.getsize(fs.path)
        torn = _open(d, 0, prealloc)
        assert torn.size == size
        # What is cut: the torn bytes (and the zeros after them); nothing if what is left is zeros.
        assert torn.torn_bytes in ((full - k - size,) if not prealloc else (0, file_size - size))
        assert _state(torn) == before
        # the WAL was cut back to a clean end: writing goes on and survives another reopen
        torn.log_append(log, [["after", 1]])
        torn.put("k", "after")
        torn.close()
        again = _open(d, 0, prealloc)
        kv, logs = before
        assert _state(again) == ({**kv, "k": "after"}, {**logs, log: logs[log] + [["after", 1]]})
        again.close()
        assert after[1][log][:len(before[1][log])] == before[1][log]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(ops.filter(lambda o: o[0] not in ("read", "reopen")), min_size=1, max_size=20),
       cut=st.integers(min_value=0))
def test_any_torn_tail_recovers_a_prefix_of_history(script: list[Any], cut: int) -> None:
    """Cut anywhere: what comes back is the model's state after some operation at or after the
    last flush that the cut left whole; never a state that never was."""
    model = MemoryStorage()
    history = [_state(model)]          # state after each operation
    flushed: list[tuple[int, int]] = [(0, 0)]      # (WAL size, operations done) at each flush
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        for op in script:
            if op[0] == "flush":
                fs.flush()
                flushed.append((os.path.getsize(fs.path), len(history) - 1))
            else:
                _run(fs, model, op)
                history.append(_state(model))
        fs.close()
        full = os.path.getsize(fs.path)
        keep = full - cut % (full + 1)
        with open(fs.path, "r+b") as f:
            f.truncate(keep)
        torn = _open(d, 0)          # never raises
        got = _state(torn)
        torn.close()
    floor = max(n for size, n in flushed if size <= keep)
    assert got in history[floor:], (keep, full, flushed)


def test_garbled_record_ends_the_good_prefix() -> None:
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        fs.log_append("log", [[1, "a"]])
        fs.log_append("log", [[1, "b"]])
        fs.flush()
        size = os.path.getsize(fs.path)
        fs.log_append("log", [[2, "c"]])
        fs.log_append("log", [[2, "d"]])
        fs.flush()
        fs.close()
        with open(fs.path, "r+b") as f:
            f.seek(size + 12)
            b = f.read(1)
            f.seek(size + 12)
            f.write(bytes([b[0] ^ 0xFF]))
        again = _open(d, 0)
        assert again.log_read("log") == [[1, "a"], [1, "b"]]
        assert again.torn_bytes > 0
        again.close()


def test_one_record_per_run_of_appends_to_one_log() -> None:
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        for i in range(50):
            fs.log_append("log", [[1, str(i)]])
        fs.log_append("other", [[1, "x"]])
        fs.log_append("log", [[1, "y"]])
        fs.flush()
        fs.close()
        again = _open(d, 0)
        assert again.recovered_records == 3
        assert again.log_read("log") == [[1, str(i)] for i in range(50)] + [[1, "y"]]
        assert again.log_read("other") == [[1, "x"]]
        again.close()


UNENCODABLE = {"object": object(), "set": {1, 2}, "u64+1": 2**64, "i64-1": -(2**63) - 1,
               "nested_object": [1, object()], "deep_object": {"k": [1, 2, object()]}}


@pytest.mark.parametrize("bad", list(UNENCODABLE.values()), ids=list(UNENCODABLE))
def test_unencodable_value_raises_at_the_call_not_at_flush(bad: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        fs.log_append("log", [[1, "a"]])
        with pytest.raises((TypeError, ValueError, OverflowError)):
            fs.log_append("log", [[1, "b"], bad])
        with pytest.raises((TypeError, ValueError, OverflowError)):
            fs.put("hard", {"term": 1, "x": bad})
        with pytest.raises((TypeError, ValueError, OverflowError)):
            fs.log_append("other", [bad])
        # the failed calls left nothing behind, and the shared packer is clean
        fs.log_append("log", [[1, "c"]])
        fs.put("hard", {"term": 2})
        assert fs.log_read("log") == [[1, "a"], [1, "c"]]
        assert fs.flush() is True
        assert fs.get("hard") == {"term": 2}
        fs.close()
        again = _open(d, 0)
        assert again.log_read("log") == [[1, "a"], [1, "c"]]
        assert again.log_read("other") == []
        assert again.get("hard") == {"term": 2}
        assert again.torn_bytes == 0
        again.close()


def test_values_come_back_as_a_msgpack_round_trip() -> None:
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        fs.log_append("log", [(1, ("t", b"\x00")), {3: "int key"}])
        assert fs.log_read("log") == [[1, ["t", b"\x00"]], {3: "int key"}]
        read = fs.log_read("log")
        read[0].append("changed")           # a reader cannot change stored entries' list
        read.append("extra")
        fs.close()
        again = _open(d, 0)
        want = msgpack.unpackb(msgpack.packb([[1, ["t", b"\x00"]], {3: "int key"}], use_bin_type=True),
                               raw=False, strict_map_key=False)
        assert again.log_read("log") == want
        again.close()


def test_truncate_inside_a_batch_not_yet_sealed() -> None:
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        fs.log_append("log", [[1, "a"], [1, "b"]])
        fs.flush()
        fs.log_append("log", [[2, "c"]])
        fs.log_append("log", [[2, "d"]])
        fs.log_truncate("log", 3)           # inside the batch being gathered
        fs.log_append("log", [[3, "e"]])
        fs.log_truncate("log", 10)          # past the end: no effect
        assert fs.log_read("log") == [[1, "a"], [1, "b"], [2, "c"], [3, "e"]]
        fs.log_truncate("log", 1)
        fs.log_append("log", [[4, "f"]])
        fs.close()                          # close flushes
        again = _open(d, 0)
        assert again.log_read("log") == [[1, "a"], [4, "f"]]
        again.close()


def test_compaction_keeps_undecoded_appends() -> None:
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 200)
        want = []
        for i in range(40):
            fs.log_append("log", [[i, "x" * 10]])
            want.append([i, "x" * 10])
            if i % 7 == 6:
                fs.flush()              # grows past 200 bytes: compacts, never read in between
        fs.put("hard", {"term": 40})
        fs.close()
        assert os.path.getsize(os.path.join(d, "wal")) < 40 * 20 + 200
        again = _open(d, 200)
        assert again.log_read("log") == want
        assert again.get("hard") == {"term": 40}
        again.close()


@pytest.mark.parametrize("sizes", [(15, 1), (16,), (3, 13), (65535, 1), (70000,), (65530, 10)])
def test_array_header_sizes(sizes: tuple[int, ...]) -> None:
    """Runs of appends whose total crosses msgpack's 16 and 65536 array sizes (1-, 3-, 5-byte
    headers), spliced from calls with their own headers."""
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        want: list[Any] = []
        for n in sizes:
            chunk = [[len(want) + i, None] for i in range(n)]
            fs.log_append("log", chunk)
            want += chunk
        fs.flush()
        assert fs.log_read("log") == want
        fs.close()
        again = _open(d, 0)
        assert again.recovered_records == 1
        assert again.log_read("log") == want
        again.close()


def test_truncating_into_the_decoded_part_drops_later_appends_without_decoding_them(monkeypatch) -> None:
    import nodes.filestorage as fsmod
    with tempfile.TemporaryDirectory() as d:
        fs = _open(d, 0)
        fs.log_append("log", [[1, "a"], [1, "b"]])
        assert fs.log_read("log") == [[1, "a"], [1, "b"]]      # decoded
        fs.log_append("log", [[2, "c"]])
        fs.flush()
        fs.log_append("log", [[2, "d"]])

        def no_decode(data: bytes) -> None:
            raise AssertionError("decoded entries the truncation drops")
        monkeypatch.setattr(fsmod, "_unpack", no_decode)
        fs.log_truncate("log", 1)
        monkeypatch.undo()
        fs.log_append("log", [[3, "e"]])
        assert fs.log_read("log") == [[1, "a"], [3, "e"]]
        fs.close()
        again = _open(d, 0)
        assert again.log_read("log") == [[1, "a"], [3, "e"]]
        again.close()
