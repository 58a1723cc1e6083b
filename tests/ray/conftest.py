"""A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`) and the HTTP
front-end on loopback driving one node actor per simulated node (sim executors)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("fastapi")

from ray.cluster_utils import Cluster  # noqa: E402

from tetriopt.cluster.ray_serve import NODE_RESOURCE, create_cluster_app  # noqa: E402
from tetriopt.server.config import ServerConfig  # noqa: E402
from tetriopt.server.run import build_server  # noqa: E402

FAST_PROFILE = str(Path(__file__).resolve().parents[1] / "server" / "fast-profile.json")
# greedy planning keeps 3 node actors light on 2 cores; rounds of 60 ms, steps of 4-24 ms
CFG = ServerConfig(gpus=4, profile=FAST_PROFILE, port=0, policy="greedy", default_steps=8,
                   default_size="512x512", job_ttl_s=120, drain_timeout_s=60, max_queue=10_000)
NODE_ARGS = {"num_cpus": 1, "resources": {NODE_RESOURCE: 1}}


class FrontEnd:
    """uvicorn serving the Ray front-end on a thread; `url` once it listens."""

    def __init__(self, nodes: int, router: str):
        self.server = build_server(CFG, lambda c, on_drained=None: create_cluster_app(
            c, nodes, router, on_drained=on_drained))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > 120:
                raise RuntimeError("front-end did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    @property
    def app(self):
        return self.server.config.app

    @property
    def service(self):
        return self.app.state.service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="package")
def ray_cluster():
    """A head (no node slot: the driver and the front-end live there) and 3 simulated GPU nodes."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    workers = [c.add_node(**NODE_ARGS) for _ in range(3)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="package")
def front(ray_cluster):
    fe = FrontEnd(3, "deadline-aware")
    yield fe
    fe.stop()


def replace_cfg(**kw) -> ServerConfig:
    return replace(CFG, **kw)
