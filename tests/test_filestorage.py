"""FileStorage: the agent's fsync'd WAL. Recovery keeps exactly the flushed prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nodes.filestorage import FileStorage


def test_roundtrip_after_reopen(tmp_path):
    s = FileStorage(str(tmp_path))
    s.put("term", 3)
    s.put("vote", "n2")
    s.log_append("log", [{"t": 1, "c": "a"}, {"t": 1, "c": "b"}, {"t": 2, "c": "c"}])
    s.log_truncate("log", 2)
    s.log_append("log", [{"t": 3, "c": "d"}])
    s.put("term", 4)
    assert s.flush() is True
    assert s.flush() is False          # nothing new: no second fsync
    assert s.fsyncs == 1
    s.close()
    r = FileStorage(str(tmp_path))
    assert r.get("term") == 4 and r.get("vote") == "n2" and r.get("missing", 7) == 7
    assert r.log_read("log") == [{"t": 1, "c": "a"}, {"t": 1, "c": "b"}, {"t": 3, "c": "d"}]
    assert r.log_read("other") == []
    assert r.recovered_records == 6 and r.torn_bytes == 0


def test_unflushed_writes_are_not_on_disk(tmp_path):
    s = FileStorage(str(tmp_path))
    s.put("a", 1)
    s.flush()
    s.put("b", 2)                      # never flushed: a crash here loses it
    assert s.get("b") == 2             # but the running core sees its own write
    r = FileStorage(str(tmp_path))
    assert r.get("a") == 1 and r.get("b") is None


def test_reads_are_copies(tmp_path):
    s = FileStorage(str(tmp_path))
    s.put("k", {"xs": [1, 2]})
    s.log_append("log", [[1, "a"]])
    s.get("k")["xs"].append(3)
    s.log_read("log").append([9, "z"])
    assert s.get("k") == {"xs": [1, 2]}
    assert s.log_read("log") == [[1, "a"]]
    s.put("t", (1, 2))                 # tuples come back as lists, before and after a restart alike
    assert s.get("t") == [1, 2]


def test_int_map_keys_survive(tmp_path):
    s = FileStorage(str(tmp_path))
    s.put("votes", {1: "n1", 2: "n3"})
    s.flush()
    assert FileStorage(str(tmp_path)).get("votes") == {1: "n1", 2: "n3"}


def _one_put_then_one_append(src, **kw) -> tuple[bytes, int, int]:
    """A WAL of a flushed put and then a flushed append: (the file, where the append's record
    starts, where the log ends)."""
    s = FileStorage(str(src), **kw)
    s.put("a", 1)
    s.flush()
    good = s.size
    s.log_append("log", [{"big": "x" * 50}])
    s.flush()
    s.close()
    return (src / "wal").read_bytes(), good, s.size


def test_every_torn_tail_recovers_the_good_prefix(tmp_path):
    data, good, end = _one_put_then_one_append(tmp_path / "src")
    data = data[:end]                   # the log, without the zeros preallocated after it
    for cut in range(good, len(data)):           # every way the last write could be torn
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "wal").write_bytes(data[:cut])
        r = FileStorage(str(d))
        assert r.get("a") == 1 and r.log_read("log") == []
        assert r.torn_bytes == cut - good
        assert os.path.getsize(d / "wal") == good     # cut back to a clean end...
        r.put("b", 2)                                 # ...so appends go on from there
        r.flush()
        assert FileStorage(str(d)).get("b") == 2


def test_garbled_tail_is_cut(tmp_path):
    s = FileStorage(str(tmp_path))
    s.put("a", 1)
    s.put("b", 2)
    s.flush()
    s.close()
    data = bytearray((tmp_path / "wal").read_bytes()[:s.size])
    data[-1] ^= 0xFF                                   # a flipped bit in the last record: bad checksum
    (tmp_path / "wal").write_bytes(bytes(data) + b"\x00" * 64)
    r = FileStorage(str(tmp_path))
    assert r.get("a") == 1 and r.get("b") is None and r.torn_bytes > 64


def test_compaction_keeps_state_and_shrinks(tmp_path):
    s = FileStorage(str(tmp_path), compact_bytes=4000, fsync=False)   # fsync is not what this tests
    for i in range(200):
        s.put("counter", i)
        s.log_append("log", [i])
        if i % 50 == 0:
            s.log_truncate("log", i // 2)
        s.flush()
    assert os.path.getsize(tmp_path / "wal") < 4000 + 200       # fsync=False: no zeros ahead
    expect_log = s.log_read("log")
    s.close()
    r = FileStorage(str(tmp_path))
    assert r.get("counter") == 199 and r.log_read("log") == expect_log
    assert not os.path.exists(tmp_path / "wal.tmp")


_WRITER = textwrap.dedent("""
    import sys
    from nodes.filestorage import FileStorage
    s = FileStorage(sys.argv[1])
    i = 0
    while True:
        s.log_append("log", [{"i": i, "pad": "p" * (i % 300)}])
        s.put("last", i)
        s.flush()
        print(i, flush=True)           # i is acknowledged only after its fsync
        i += 1
        s.log_append("log", [{"i": -1}])   # written but never flushed when the kill lands
""")


def test_kill9_loses_nothing_that_was_flushed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    try:
        acked = -1
        for _ in range(100_000):
            line = p.stdout.readline()
            if not line:
                break
            acked = int(line)
            if acked >= 300:
                break
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        p.stdout.close()
    assert acked >= 300
    r = FileStorage(str(tmp_path))
    log = r.log_read("log")
    assert r.get("last") >= acked
    ids = [e["i"] for e in log if e["i"] >= 0]
    assert ids[: acked + 1] == list(range(acked + 1))      # every acknowledged entry, in order
    assert ids == list(range(len(ids)))                    # and nothing but whole, ordered entries


@pytest.mark.parametrize("bad", [b"\xff" * 8, b"\x05\x00\x00\x00\x00\x00\x00\x00abc"])
def test_garbage_file_recovers_empty(tmp_path, bad):
    (tmp_path / "wal").write_bytes(bad)
    r = FileStorage(str(tmp_path))
    assert r.get("a") is None and r.torn_bytes == len(bad)


def test_preallocated_zeros_are_not_a_torn_tail(tmp_path):
    """The file runs ``prealloc`` bytes of zeros past the log; a sync inside them does not grow
    it, and reopening reads the zeros as the end of the log, cutting nothing."""
    s = FileStorage(str(tmp_path), prealloc=4096)
    s.put("a", 1)
    s.flush()
    allocated = os.path.getsize(tmp_path / "wal")
    assert allocated == s.size + 4096
    for i in range(10):
        s.log_append("log", [[1, str(i)]])
        s.flush()
    assert os.path.getsize(tmp_path / "wal") == allocated      # written into the zeros
    s.close()
    r = FileStorage(str(tmp_path), prealloc=4096)
    assert r.torn_bytes == 0 and r.recovered_records == 11 and r.size == s.size
    assert r.get("a") == 1 and r.log_read("log") == [[1, str(i)] for i in range(10)]
    r.put("b", 2)                       # appends go on at the log's end, not the file's
    r.flush()
    assert os.path.getsize(tmp_path / "wal") == allocated
    assert FileStorage(str(tmp_path)).get("b") == 2


def test_growing_past_the_zeros_allocates_more(tmp_path):
    s = FileStorage(str(tmp_path), prealloc=256)
    for i in range(40):
        s.log_append("log", [{"i": i, "pad": "p" * 40}])
        s.flush()
        assert s.size <= os.path.getsize(tmp_path / "wal") <= s.size + 256 + 64
    s.close()
    assert FileStorage(str(tmp_path)).log_read("log") == [{"i": i, "pad": "p" * 40} for i in range(40)]


def test_torn_record_in_the_zeros_is_cut(tmp_path):
    """A write cut inside the preallocated zeros: whatever part of the record reached the disk
    (its header only, a middle, its end) is cut, and the log goes on from the good prefix."""
    data, good, end = _one_put_then_one_append(tmp_path / "src", prealloc=4096)
    record = data[good:end]
    zeros = b"\0" * (len(data) - end)
    torn = {"header only": record[:8] + b"\0" * (len(record) - 8),
            "no header": b"\0" * 8 + record[8:],
            "a middle": b"\0" * 20 + record[20:40] + b"\0" * (len(record) - 40)}
    for name, part in torn.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        (d / "wal").write_bytes(data[:good] + part + zeros)
        r = FileStorage(str(d), prealloc=4096)
        assert r.get("a") == 1 and r.log_read("log") == [], name
        assert r.torn_bytes == len(data) - good and os.path.getsize(d / "wal") == good, name
        r.put("b", 2)
        r.flush()
        r.close()
        again = FileStorage(str(d), prealloc=4096)
        assert again.get("b") == 2 and again.torn_bytes == 0, name


def test_compaction_with_preallocation(tmp_path):
    s = FileStorage(str(tmp_path), compact_bytes=4000, prealloc=1024)
    for i in range(100):
        s.put("counter", i)
        s.log_append("log", [i])
        s.flush()
    assert s.size < 4000 + 200 and os.path.getsize(tmp_path / "wal") <= s.size + 1024 + 200
    s.close()
    r = FileStorage(str(tmp_path))
    assert r.get("counter") == 99 and r.log_read("log") == list(range(100)) and r.torn_bytes == 0


def test_zeros_grow_with_the_log_up_to_prealloc(tmp_path):
    """A small log gets small steps of zeros (a lab of many quiet nodes writes few of them);
    a log that grows gets steps as large as itself, up to ``prealloc``."""
    s = FileStorage(str(tmp_path), prealloc=256 << 10)
    s.put("a", 1)
    s.flush()
    assert os.path.getsize(tmp_path / "wal") == s.size + (64 << 10)
    steps = []
    for _ in range(12):
        before = os.path.getsize(tmp_path / "wal")
        s.log_append("log", [["x" * 1000] * 60])            # one entry of ~60 KB a flush
        s.flush()
        after = os.path.getsize(tmp_path / "wal")
        if after != before:
            steps.append(after - s.size)
    assert steps[0] >= 64 << 10 and steps[-1] == 256 << 10 and steps == sorted(steps)
    s.close()
    assert len(FileStorage(str(tmp_path)).log_read("log")) == 12
