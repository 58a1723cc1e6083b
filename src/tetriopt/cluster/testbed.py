"""A Ray cluster of simulated GPU nodes on this one machine, and servers on threads: the set-up
that the Ray tests (tests/ray) and benchmarks/ray_overhead.py share.

`ray.cluster_utils.Cluster` starts a real head and separate raylets with their own worker
processes per node, on one machine: one node slot (`NODE_RESOURCE`) per simulated node, so the
front-end places one node actor on each. Needs the ray extra (imported here, not by tetriopt).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import httpx

from ..server.config import ServerConfig
from .ray_serve import NODE_RESOURCE

NODE_ARGS = {"num_cpus": 1, "resources": {NODE_RESOURCE: 1}}  # a simulated node: one slot for its actor
TERMINAL = ("succeeded", "failed", "cancelled")


def local_ray_cluster(nodes: int, head_cpus: int = 2) -> tuple[Any, list[Any]]:
    """(cluster, worker nodes): a head without a node slot (the driver and front-end live there)
    and `nodes` simulated GPU nodes; ray is initialised against it. Stop with `stop_ray(cluster)`."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
    workers = [c.add_node(**NODE_ARGS) for _ in range(nodes)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    return c, workers


def stop_ray(cluster: Any) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


class ServerThread:
    """`tetriopt serve` (uvicorn, in this process) on a thread: the single-process server, or with
    `make_app` (e.g. the Ray front-end) another app; `url` once it listens."""

    def __init__(self, cfg: ServerConfig, make_app: Callable[..., Any] | None = None, start_s: float = 120):
        from ..server.run import build_server

        self.server = build_server(cfg, make_app) if make_app else build_server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > start_s:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    @property
    def app(self) -> Any:
        return self.server.config.app

    @property
    def service(self) -> Any:
        return self.app.state.service

    def stop(self, wait_s: float = 60) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=wait_s)


def wait_jobs(c: httpx.Client, ids: list[str], timeout_s: float = 180) -> dict[str, dict]:
    """Poll GET /v1/jobs/{id} until every job is terminal or timeout_s passes; the terminal ones."""
    out: dict[str, dict] = {}
    t0 = time.monotonic()
    while len(out) < len(ids) and time.monotonic() - t0 < timeout_s:
        for j in ids:
            if j not in out:
                b = c.get(f"/v1/jobs/{j}").json()
                if b["status"] in TERMINAL:
                    out[j] = b
        time.sleep(0.1)
    return out
