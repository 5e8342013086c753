"""Docker runtime: time to a ready lab, beside bare containers of the same image.

For N in (5, 20): the wall time from ``DockerBackend.start()`` to every agent
answering over its control socket (network, volumes, containers, the kernel
probe, readiness), and -- measured in the same command, as the anchor --
the wall time to create and start N bare containers (``sleep``) of the same
image on a bridge network of their own, with the same parallelism. The image
is built (or found) first and is not part of either figure.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.trials import alternate, ratio, summarize
from lab.backends.docker import WORKERS, DockerBackend, docker_client, down_all
from lab.image import ensure_image
from lab.scenario import NodeSpec, Scenario

SIZES = (5, 20)
OWNER = "bench"


def bare_containers(client: Any, image: str, n: int) -> float:
    """Seconds to create and start ``n`` sleeping containers of ``image``; removed afterwards."""
    tag = f"zlab-bench-{uuid.uuid4().hex[:6]}"
    labels = {"zlab.lab": tag, "zlab.owner": OWNER}
    try:
        t = time.monotonic()
        client.networks.create(tag, driver="bridge", labels=labels)

        def one(i: int) -> None:
            client.containers.run(image, entrypoint=["sleep", "60"], name=f"{tag}-{i}", labels=labels,
                                  network=tag, detach=True)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            list(pool.map(one, range(n)))
        return time.monotonic() - t
    finally:
        down_all(tag, client=client)


def lab_ready(image: str, n: int) -> tuple[float, float]:
    """(seconds to a ready n-node lab, seconds to stop and remove it)."""
    scenario = Scenario(name=f"bench{n}", protocol="register", nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)])
    b = DockerBackend(scenario, 1, tempfile.mkdtemp(prefix="zlab-bench-"), image=image, owner=OWNER)
    t = time.monotonic()
    try:
        b.start()
        ready = time.monotonic() - t
    finally:
        t_stop = time.monotonic()
        b.stop()
    return ready, time.monotonic() - t_stop


def run(trials: int | None = None, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    client = docker_client()
    t = time.monotonic()
    image = ensure_image(client)
    out: dict[str, Any] = {"image": image, "image_ensure_s": round(time.monotonic() - t, 2),
                           "parallel_docker_calls": WORKERS}
    kw = {"trials": trials} if trials else {}
    rows = []
    for n in sizes:
        def lab(n: int = n) -> dict[str, float]:
            ready, stop = lab_ready(image, n)
            return {"lab_ready_s": ready, "lab_stop_s": stop}
        res = alternate([("bare", lambda n=n: {"bare_containers_s": bare_containers(client, image, n)}),
                         ("lab", lab)], **kw)
        bare, ready = summarize(res["bare"], "bare_containers_s"), summarize(res["lab"], "lab_ready_s")
        ratios = [ratio(r["lab_ready_s"], b["bare_containers_s"]) for r, b in zip(res["lab"], res["bare"], strict=True)]
        out[f"nodes_{n}"] = {"lab_ready_s": ready, "bare_containers_s": bare,
                             "overhead_x": statistics.median(ratios), "overhead_ratios": ratios,
                             "lab_stop_s": summarize(res["lab"], "lab_stop_s")}
        print(f"   {n:>3} nodes: lab ready in {ready['median']:.2f}s, {n} bare containers in "
              f"{bare['median']:.2f}s ({statistics.median(ratios):.2f}x, medians of {len(ratios)})", flush=True)
        rows.append([f"ready {n}-node docker lab", f"{ready['median']:.2f} s "
                     f"(**{statistics.median(ratios):.2f}×**; trials "
                     + ", ".join(f"{v:.2f}" for v in ready["trials"]) + ")",
                     f"{n} bare containers {bare['median']:.2f} s", "≤ 2×"])
    out["readme_rows"] = rows
    return out


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
