"""Floors and references measured on this machine: raw pyzmq round trips and pynacl's verify rate."""

from __future__ import annotations

import statistics
import threading
import time

import zmq


def zmq_round_trip(count: int = 5000, size: int = 64) -> dict[str, float]:
    """DEALER->ROUTER echo over TCP loopback, one message in flight: the floor under any RPC."""
    ctx = zmq.Context()
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def echo() -> None:
        poller = zmq.Poller()
        poller.register(server, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(100):
                server.send_multipart(server.recv_multipart())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(f"tcp://127.0.0.1:{port}")
    payload = b"x" * size
    samples = []
    try:
        for _ in range(200):  # warm the connection before measuring
            client.send(payload)
            client.recv()
        for _ in range(count):
            t = time.perf_counter()
            client.send(payload)
            client.recv()
            samples.append(time.perf_counter() - t)
    finally:
        stop.set()
        thread.join()
        client.close()
        server.close()
        ctx.term()
    samples.sort()
    return {"p50_us": statistics.median(samples) * 1e6,
            "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
            "count": count}


def nacl_verify_rate(count: int = 5000, size: int = 256) -> dict[str, float]:
    """ed25519 verifications per second of a message the size of a PBFT prepare."""
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    signed = key.sign(b"m" * size)
    verify = key.verify_key.verify
    t = time.perf_counter()
    for _ in range(count):
        verify(signed)
    elapsed = time.perf_counter() - t
    return {"verify_per_s": count / elapsed, "count": count}
