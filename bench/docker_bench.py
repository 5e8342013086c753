"""Docker runtime: time to a ready lab, beside bare containers of the same image.

For N in (5, 20, 50, 100): the wall time from ``DockerBackend.start()`` to every
agent answering over its control socket with every link to its peers up
(network, volumes, containers, the kernel probe, readiness), and -- measured in
the same command, as the anchor -- the wall time to create and start N bare
containers (``sleep``) of the same image on a bridge network of their own, with
the same parallelism. The image is built (or found) first and is not part of
either figure. With each ready lab: what a node costs -- its container's memory
as ``docker stats`` counts it (usage less inactive page cache; a sample of up to
10 containers) and the CPU seconds its agent took to start. Labs of 50 and 100
run BIG_TRIALS trials (minutes each on two cores), the others TRIALS.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.trials import TRIALS, alternate, ratio, summarize
from lab.backends.docker import WORKERS, DockerBackend, docker_client, down_all
from lab.image import ensure_image
from lab.scenario import NodeSpec, Scenario

SIZES = (5, 20, 50, 100)
BIG = 50                # labs this size and up run BIG_TRIALS trials
BIG_TRIALS = 2
OWNER = "bench"
MEM_SAMPLE = 10         # containers whose memory is read (one engine call each)


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


def container_cost(api: Any, container: str) -> dict[str, float | None]:
    """A running container's memory (MB, as ``docker stats`` shows it: usage less inactive
    page cache; and its anonymous, resident part) and CPU seconds so far, from one stats call."""
    try:
        st = api.stats(container, stream=False, one_shot=True)
    except Exception:  # noqa: BLE001 -- a figure missing, not a failed bench
        return {"mem_mb": None, "rss_mb": None, "cpu_s": None}
    mem = st.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    rss = detail.get("total_rss", detail.get("anon"))
    cpu = ((st.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    return {"mem_mb": round((mem.get("usage", 0) - inactive) / 2**20, 1) if mem.get("usage") else None,
            "rss_mb": round(rss / 2**20, 1) if rss is not None else None,
            "cpu_s": round(cpu / 1e9, 3) if cpu is not None else None}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def lab_ready(image: str, n: int) -> dict[str, Any]:
    """Seconds to a ready n-node lab and to stop and remove it; what a node costs."""
    scenario = Scenario(name=f"bench{n}", protocol="register", nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)])
    b = DockerBackend(scenario, 1, tempfile.mkdtemp(prefix="zlab-bench-"), image=image, owner=OWNER)
    t = time.monotonic()
    costs: list[dict[str, float | None]] = []
    try:
        b.start()
        ready = time.monotonic() - t
        costs = [container_cost(b.docker.api, b.container(node)) for node in b.names[:MEM_SAMPLE]]
    finally:
        t_stop = time.monotonic()
        b.stop()
    return {"lab_ready_s": ready, "lab_stop_s": time.monotonic() - t_stop,
            "mem_mb_per_container": _median([c["mem_mb"] for c in costs]),
            "rss_mb_per_container": _median([c["rss_mb"] for c in costs]),
            "agent_cpu_s_at_ready": _median([c["cpu_s"] for c in costs])}


def run(trials: int | None = None, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    client = docker_client()
    t = time.monotonic()
    image = ensure_image(client)
    out: dict[str, Any] = {"image": image, "image_ensure_s": round(time.monotonic() - t, 2),
                           "parallel_docker_calls": WORKERS}
    rows = []
    for n in sizes:
        def lab(n: int = n) -> dict[str, Any]:
            return lab_ready(image, n)
        res = alternate([("bare", lambda n=n: {"bare_containers_s": bare_containers(client, image, n)}),
                         ("lab", lab)], trials=trials or (BIG_TRIALS if n >= BIG else TRIALS))
        bare, ready = summarize(res["bare"], "bare_containers_s"), summarize(res["lab"], "lab_ready_s")
        ratios = [ratio(r["lab_ready_s"], b["bare_containers_s"]) for r, b in zip(res["lab"], res["bare"], strict=True)]
        cost = {k: summarize(res["lab"], k) for k in ("mem_mb_per_container", "rss_mb_per_container",
                                                     "agent_cpu_s_at_ready")}
        out[f"nodes_{n}"] = {"lab_ready_s": ready, "bare_containers_s": bare,
                             "overhead_x": statistics.median(ratios), "overhead_ratios": ratios,
                             "lab_stop_s": summarize(res["lab"], "lab_stop_s"),
                             "ready_s_per_node": round(ready["median"] / n, 3), **cost}
        print(f"   {n:>3} nodes: lab ready in {ready['median']:.2f}s ({ready['median'] / n:.2f} s a node), "
              f"{n} bare containers in {bare['median']:.2f}s ({statistics.median(ratios):.2f}x, medians of "
              f"{len(ratios)}); a node: {cost['mem_mb_per_container']['median']} MB "
              f"({cost['rss_mb_per_container']['median']} MB resident), "
              f"{cost['agent_cpu_s_at_ready']['median']} CPU s to start", flush=True)
        rows.append([f"ready {n}-node docker lab", f"{ready['median']:.2f} s "
                     f"(**{statistics.median(ratios):.2f}×**; trials "
                     + ", ".join(f"{v:.2f}" for v in ready["trials"]) + ")",
                     f"{n} bare containers {bare['median']:.2f} s", "≤ 2×"])
    out["readme_rows"] = rows
    return out


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
