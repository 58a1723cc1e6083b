"""`tetriopt serve --ray`: the FastAPI front-end driving one Ray node actor per GPU node.

The front-end is the single-process server's app and `Service` (same API, auth, validation,
admission, drain, metrics) with its round loop replaced by a `RayDispatcher`: it routes each
accepted job to a node actor (`ray_node.NodeActor`: that node's own round loop, planner and
executor), awaits its result through Ray, and fills in the job the app answers from.

- Routing: a pluggable `Router` over each node's last reported state plus the jobs routed to it
  since; deadline-aware answers 429 when no node can keep a request (`--admission best-effort`:
  it goes to the node with least committed work instead).
- Moves: every round, jobs no step of which has run may move off a node that fell behind
  (`Router.moves`): the node confirms nothing started (`take_back`), then the job goes on.
- Failures: a node whose actor dies (its Ray node was lost) is marked down and each of its
  unfinished jobs is sent to another node, from step 0 (its latents died with the node). A job
  is on one node at a time and takes its result only from that node, so it finishes exactly
  once. Node actors restart with Ray (`max_restarts=-1`) when their resources come back; a new
  incarnation id tells the front-end the node rejoined empty.
- Placement: a node actor asks for `num_gpus = --gpus` with `--executor cuda` (one actor per
  GPU node), and for one unit of the custom resource `tetriopt_node` when the Ray cluster
  offers it (start Ray nodes with `--resources '{"tetriopt_node": 1}'`); otherwise actors may
  share a machine (sim executors on a laptop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..instance import Cluster
from ..errors import InputError
from ..server.config import ServerConfig
from ..server.errors import ApiError
from ..server.jobs import Job
from ..server.requests import GenerationRequest
from ..server.service import Service
from ..state import RequestState, RoundState
from .router import LeastWork, NodeView, make_router

log = logging.getLogger("tetriopt.cluster")
NODE_RESOURCE = "tetriopt_node"


@dataclass
class Node:
    """The front-end's picture of one node actor."""

    index: int
    actor: Any
    up: bool = False
    incarnation: str | None = None
    host: str = ""
    ray_node: str = ""                                # Ray node id the actor runs on
    tasks: list[dict] = field(default_factory=list)  # last view's unfinished images
    stats: dict = field(default_factory=dict)
    seen_at: float = 0.0                              # monotonic time of the last answer
    routed: int = 0
    restarts: int = 0
    rounds: list[dict] = field(default_factory=list)  # its recent rounds (schedule log, epoch-ms times)


class RayDispatcher:
    """Stands where the single-process server's round loop stands: submit, cancel, alive, stop."""

    def __init__(self, svc: "ClusterService", nodes: int, router: str, address: str | None,
                 poll_s: float | None = None):
        self.svc = svc
        self.n = nodes
        self.router = make_router(router)
        self.fallback = LeastWork()
        self.address = address
        # views are a round old at most; never faster than 5 polls a second (they cost the nodes CPU)
        self.poll_s = poll_s if poll_s is not None else max(0.2, svc.timing.round_us / 1e6)
        self.nodes: list[Node] = []
        self.assign: dict[str, int] = {}       # job id -> node index (unfinished jobs)
        self.bodies: dict[str, Any] = {}       # job id -> what the node needs to run it
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self.alive = False
        self.counts = {"rerouted": 0, "moved": 0, "duplicate_results": 0, "rejoined": 0}
        self.owns_ray = False
        self._moving: set[str] = set()
        self.start_timeout_s = 120.0  # first start of a node actor (imports, planner warm-up)
        self.answer_s = max(2.0, 4 * self.poll_s)  # a node silent this long is down (a busy one answers sooner)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            self.owns_ray = True
        from .ray_node import NodeActor

        cfg = self.svc.node_cfg
        opts: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": 1,
                                "max_concurrency": 10000}
        if cfg.executor == "cuda":
            opts["num_gpus"] = cfg.gpus
        if ray.cluster_resources().get(NODE_RESOURCE):
            opts["resources"] = {NODE_RESOURCE: 1}
        remote = ray.remote(NodeActor).options(**opts)
        self.nodes = [Node(i, remote.remote(i, cfg)) for i in range(self.n)]

        async def hello(n: Node) -> None:
            try:
                h = await asyncio.wait_for(n.actor.hello.remote(), self.start_timeout_s)
            except asyncio.TimeoutError:  # not placed yet (no free resources): it joins when it is
                log.warning("node actor not up at start", extra={"node": n.index, "resources": opts})
                return
            n.up, n.incarnation, n.seen_at = True, h["incarnation"], time.monotonic()
            n.host, n.ray_node = h["host"], h["ray_node"]

        await asyncio.gather(*(hello(n) for n in self.nodes))
        if not any(n.up for n in self.nodes):
            raise InputError("nodes", self.n, f"no node actor started within {self.start_timeout_s:g} s; each needs "
                                              f"{opts} (cluster has {ray.cluster_resources()})")
        self.alive = True
        self._poller = asyncio.create_task(self._poll_forever(), name="tetriopt-cluster-poll")
        log.info("nodes up", extra={"nodes": [(n.index, n.host) for n in self.nodes]})

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
        for t in list(self._tasks):
            t.cancel()
        import ray

        await asyncio.gather(*(asyncio.wait_for(n.actor.stop.remote(), 10) for n in self.nodes if n.up),
                             return_exceptions=True)
        for n in self.nodes:
            ray.kill(n.actor, no_restart=True)
        self.alive = False
        if self.owns_ray:
            ray.shutdown()

    # -- routing ---------------------------------------------------------------------------------
    def _request_states(self, job: Job) -> list[RequestState]:
        return [RequestState(id=t.id, width=t.width, height=t.height, remaining_steps=t.steps,
                             deadline_us=t.deadline_us, arrival_us=t.arrival_us) for t in job.tasks]

    def views(self) -> list[NodeView]:
        """Each node's unfinished images: as it last reported them, plus jobs routed since."""
        svc, now = self.svc, self.svc.clock.now_us()
        per: list[list[RequestState]] = [[] for _ in self.nodes]
        reported: set[str] = set()
        for n in self.nodes:
            for t in n.tasks:
                if self.assign.get(t["job"]) != n.index:
                    continue
                reported.add(t["job"])
                per[n.index].append(RequestState(
                    id=f"{t['job']}.{t['index']}", width=t["width"], height=t["height"],
                    remaining_steps=t["remaining"], deadline_us=svc.clock.from_epoch_ms(t["deadline_epoch_ms"]),
                    arrival_us=svc.clock.from_epoch_ms(t["arrival_epoch_ms"]), location=tuple(t["location"])))
        for jid, i in self.assign.items():
            job = svc.store.get(jid)
            if jid not in reported and job is not None:
                per[i].extend(self._request_states(job))
        return [NodeView(n.index, RoundState(now_us=now, round_us=svc.timing.round_us, cluster=svc.cluster,
                                             profile=svc.profile, degrees=svc.degrees, requests=tuple(per[n.index])),
                         alive=n.up) for n in self.nodes]

    def pending_state(self, now_us: int) -> RoundState:
        """Every node's pending images on the whole cluster (admission's view: the joint test on
        it is a necessary condition; the router then asks it of one node)."""
        svc = self.svc
        reqs = tuple(r for v in self.views() for r in v.state.requests)
        return RoundState(now_us=svc.timing.first_round_us(now_us), round_us=svc.timing.round_us, cluster=svc.whole,
                          profile=svc.profile, degrees=svc.degrees, requests=reqs)

    def view(self, requests: tuple[RequestState, ...], boundary_us: int) -> tuple[RequestState, ...]:
        """Admission's planning deadlines: here the requests' own (each node's round loop plans with
        its own `PlanningDeadlines`; the front-end sees no node's rounds)."""
        return requests

    def late_arrivals_fit(self, new: tuple[RequestState, ...], now_us: int) -> bool:
        """The planned-round check needs a node's round plan, which the front-end does not see: the
        router's per-node test decides."""
        return True

    def _route(self, job: Job, views: list[NodeView] | None = None, strict: bool = True) -> int | None:
        views = views if views is not None else self.views()
        rs = self._request_states(job)
        for r in rs[:-1]:  # the job's other images go to the same node: count them there first
            views = [v.with_request(r) for v in views]
        i = self.router.route(rs[-1], views)
        if i is None and not strict:
            i = self.fallback.route(rs[-1], views)
        return i

    # -- the service's calls (event loop thread) -------------------------------------------------
    def submit(self, job: Job, persist: bool = True) -> None:
        req = self.svc.request_of(job)
        i = self._route(job, strict=self.svc.cfg.admission == "reject" and not job.best_effort)
        if i is None:
            if not any(n.up for n in self.nodes):
                raise ApiError(503, "no GPU node is up; retry later", type="server_error", code="unavailable",
                               headers={"Retry-After": "5"})
            raise ApiError(429, f"no node can keep the deadline of this request ({self.router.name} router); "
                                "retry later", type="rate_limit_error", code="no_capacity",
                           headers={"Retry-After": str(max(1, round(self.svc.timing.round_us / 1e6)))})
        self.svc.store.add(job, persist=persist)
        # the node gets the request as parsed here, its deadline absolute, its steps and seed fixed
        self.bodies[job.id] = replace(req, slo_ms=None, deadline_ms=self.svc.clock.to_epoch_s(job.deadline_us) * 1e3,
                                      steps=job.steps, seed=job.seed, model=None)
        self.assign[job.id] = i
        self.nodes[i].routed += 1
        t = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def cancel(self, job: Job, reason: str) -> bool:
        if job.terminal:
            return False
        i = self.assign.get(job.id)
        if i is not None and self.nodes[i].up:
            self.nodes[i].actor.cancel.remote(job.id)
        self._finish_job(job, "cancelled", reason)
        return True

    def _finish_job(self, job: Job, status: str, error: str | None = None) -> None:
        self.assign.pop(job.id, None)
        self.bodies.pop(job.id, None)
        self.svc.store.finish(job, status, error)

    # -- one job's life across nodes -------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        import ray.exceptions as rex

        while not job.terminal:
            i = self.assign.get(job.id)
            if i is None:
                return
            node = self.nodes[i]
            if not node.up:
                await self._reroute(job, i)
                continue
            inc = None
            try:
                # both calls at once: an actor runs one caller's calls in order, so result() finds it
                sub, out = node.actor.submit.remote(job.id, self.bodies[job.id]), node.actor.result.remote(job.id)
                inc = await sub
                if job.status == "queued":
                    job.status = "running"
                res = await out
            except rex.RayTaskError as e:  # the node raised: a bug, not a lost node; do not loop on it
                self._finish_job(job, "failed", f"node {i}: {e.cause!r}"[:300])
                return
            except rex.RayActorError as e:
                if await self._still_there(node, inc):
                    continue  # a hiccup: the same incarnation still holds it; wait again
                log.warning("node lost a job", extra={"job": job.id, "node": i, "error": type(e).__name__})
                if node.up and (inc is None or node.incarnation == inc):
                    self._node_down(node)
                await self._reroute(job, i)
                continue
            if job.terminal:  # cancelled meanwhile
                return
            if res["status"] in ("moved", "unknown"):
                continue  # moved: the mover set the new node; unknown: a new incarnation, send it again
            self._apply(job, res)
            return

    async def _still_there(self, node: Node, inc: str | None) -> bool:
        """After an actor error: does the same incarnation still hold the job? (then wait again)"""
        try:
            v = await asyncio.wait_for(node.actor.view.remote(), timeout=self.answer_s)
        except Exception:  # noqa: BLE001
            return False
        return inc is not None and v["incarnation"] == inc

    def _node_down(self, node: Node) -> None:
        if node.up:
            node.up = False
            node.tasks = []
            log.error("node down", extra={"node": node.index})

    async def _reroute(self, job: Job, dead: int) -> None:
        """The job's node died: send it elsewhere (waiting for a node if none is up)."""
        while not job.terminal:
            i = self._route(job, strict=False)
            if i is not None:
                self.assign[job.id] = i
                self.nodes[i].routed += 1
                self.counts["rerouted"] += 1
                for t in job.tasks:
                    t.done = 0
                log.info("rerouted", extra={"job": job.id, "from": dead, "to": i})
                return
            await asyncio.sleep(self.poll_s)

    def _apply(self, job: Job, res: dict) -> None:
        if res["status"] != "succeeded":
            self._finish_job(job, "failed", res.get("error") or f"node {res.get('node')}: {res['status']}")
            return
        clock = self.svc.clock
        for t, img, fin in zip(job.tasks, res["images"], res["finish_epoch_ms"]):
            if t.finished:
                self.counts["duplicate_results"] += 1
                continue
            t.image, t.done = img, t.steps
            t.finish_us = clock.from_epoch_ms(fin)
            self.svc.store.drop_task(t)
            self.svc.metrics.image_done(t.finish_us <= t.deadline_us, t.width, t.height, t.finish_us - t.arrival_us,
                                        t.deadline_us - t.finish_us, clock.now_us())
        self.svc.store.progressed(job)
        self._finish_job(job, "succeeded")

    # -- node health, views and moves ------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
                self._moves()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("cluster poll failed")
            await asyncio.sleep(self.poll_s)

    async def poll(self) -> None:
        """Ask every node for its state; mark the silent ones down and the returning ones up."""
        async def one(n: Node) -> None:
            try:
                v = await asyncio.wait_for(n.actor.view.remote(), timeout=self.answer_s)
            except Exception:  # noqa: BLE001
                self._node_down(n)
                return
            if v["incarnation"] != n.incarnation:
                if n.incarnation is not None:
                    n.restarts += 1
                    self._node_down(n)  # whatever it held is gone: its jobs go elsewhere
                n.incarnation = v["incarnation"]
            if not n.up:
                n.up = True
                self.counts["rejoined"] += 1
                try:
                    h = await n.actor.hello.remote()
                    n.host, n.ray_node = h["host"], h["ray_node"]
                except Exception:  # noqa: BLE001
                    pass
                log.info("node up", extra={"node": n.index})
            n.tasks, n.stats, n.rounds, n.seen_at = v["tasks"], v["stats"], v["rounds"], time.monotonic()
            self._progress(n)

        await asyncio.gather(*(one(n) for n in self.nodes))
        self.alive = any(n.up for n in self.nodes)

    def _progress(self, n: Node) -> None:
        """Steps the node confirmed, onto the front-end's jobs (job status and SSE `progress`)."""
        changed = set()
        for t in n.tasks:
            job = self.svc.store.get(t["job"])
            if job is None or job.terminal or self.assign.get(job.id) != n.index:
                continue
            task = job.tasks[t["index"]]
            if t["done"] > task.done:
                task.done = t["done"]
                changed.add(job.id)
        for jid in changed:
            self.svc.store.progressed(self.svc.store.get(jid))

    def _moves(self) -> None:
        for m in self.router.moves(self.views()):
            jid = m.request.rsplit(".", 1)[0]
            if self.assign.get(jid) != m.src or jid in self._moving:
                continue
            self._moving.add(jid)
            t = asyncio.create_task(self._move(jid, m.src, m.dst))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _move(self, jid: str, src: int, dst: int) -> None:
        self.assign[jid] = dst  # before the take-back: the job's loop resumes on dst
        try:
            ok = await self.nodes[src].actor.take_back.remote(jid)
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            self.counts["moved"] += 1
            self.nodes[dst].routed += 1
        elif self.assign.get(jid) == dst:
            self.assign[jid] = src
        self._moving.discard(jid)


class ClusterService(Service):
    """The single-process `Service` with its round loop replaced by a `RayDispatcher`.

    Admission runs as in the single-process server, on the whole cluster's pending work (nodes x
    GPUs, islands never crossing a node: `RayDispatcher.pending_state`) against its backlog
    limit times the nodes; the router then finds the node (429 when none can keep the request).
    """

    def __init__(self, cfg: ServerConfig, nodes: int, router: str = "deadline-aware", address: str | None = None):
        if cfg.store_path:
            log.info("no durable job store on the Ray path: jobs live in the front-end's memory",
                     extra={"store_path": cfg.store_path})
            cfg = replace(cfg, store_path=None)
        # the front-end plans nothing: its own executor is never started (sim: nothing to load)
        super().__init__(replace(cfg, executor="sim"))
        self.planner.close()  # the nodes plan; the front-end's planner never runs
        self.cfg = cfg
        self.node_cfg = cfg
        self.nodes = nodes
        if cfg.max_backlog_gpu_s is None:
            self.max_backlog_gpu_s *= nodes
        g = self.cluster.gpus
        self.whole = Cluster(g * nodes, tuple(tuple(i * g + x for x in isl) for i in range(nodes)
                                              for isl in self.cluster.islands))
        self.scheduler = RayDispatcher(self, nodes, router, address)
        self.schedule = ClusterSchedule(self.schedule, self.scheduler)
        self.metrics.registry.register(NodeCollector(self.scheduler))
        self._accepting: Any = None

    async def start(self) -> None:
        from ..server.clock import Clock

        self.clock = Clock()
        await self.scheduler.start()
        self.started = True
        log.info("serving on ray", extra={"nodes": self.nodes, "router": self.scheduler.router.name,
                                          "gpus_per_node": self.cfg.gpus, "executor": self.cfg.executor})

    def accept(self, req: GenerationRequest, sync: bool, idempotency_key: str | None = None) -> Job:
        self._accepting = req  # the dispatcher forwards the parsed request to the node
        try:
            return super().accept(req, sync, idempotency_key)
        finally:
            self._accepting = None

    def request_of(self, job: Job) -> GenerationRequest:
        assert self._accepting is not None, "jobs reach the dispatcher through accept()"
        return self._accepting

    def cancel(self, job: Job, reason: str) -> bool:
        job.abandoned = reason == "client disconnected"
        return self.scheduler.cancel(job, reason)

    def cluster_view(self) -> dict[str, Any]:
        d = self.scheduler
        return {"router": d.router.name, "nodes": [
            {"index": n.index, "up": n.up, "host": n.host, "ray_node": n.ray_node, "incarnation": n.incarnation,
             "restarts": n.restarts, "routed": n.routed,
             "unfinished_jobs": sum(1 for i in d.assign.values() if i == n.index),
             "pending_images": len(n.tasks), **{k: n.stats.get(k) for k in
                                                 ("rounds", "fallback_rounds", "solve_ms_p99", "overhead_ms_p99",
                                                  "gpu_busy_fraction", "images_finished", "slo_attainment")}}
            for n in d.nodes], **d.counts}


class ClusterSchedule:
    """The dashboard's schedule (GET /v1/schedule) for the whole cluster: every node's recent
    rounds on one time axis, node i's GPU g drawn as GPU i x G + g."""

    def __init__(self, log: Any, d: RayDispatcher):
        self.log = log  # the front-end's own (empty: it plans nothing); its snapshot gives queue and series
        self.d = d

    def snapshot(self, svc: "ClusterService") -> dict[str, Any]:
        out = self.log.snapshot(svc)
        g, at = svc.cfg.gpus, svc.clock.from_epoch_ms
        rounds = []
        for n in self.d.nodes:
            for r in n.rounds:
                rounds.append({**r, "start_us": at(r["start_ms"]), "end_us": at(r["end_ms"]),
                               "note": f"node {n.index}" + (f": {r['note']}" if r.get("note") else ""),
                               "assignments": [{**a, "gpus": [n.index * g + x for x in a["gpus"]],
                                                "start_us": at(a["start_ms"]), "end_us": at(a["end_ms"])}
                                               for a in r["assignments"]]})
        rounds.sort(key=lambda r: r["start_us"])
        out.update(gpus=g * len(self.d.nodes), rounds=rounds[-60 * max(1, len(self.d.nodes)):],
                   nodes=svc.cluster_view()["nodes"])
        return out


class NodeCollector:
    """Per-node gauges and the cluster's counters on the front-end's /metrics (read at scrape)."""

    def __init__(self, d: RayDispatcher):
        self.d = d

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        d = self.d
        per = {
            "tetriopt_node_up": ("Node actor answering (1) or lost (0)", lambda n: float(n.up)),
            "tetriopt_node_pending_images": ("Unfinished images on the node", lambda n: len(n.tasks)),
            "tetriopt_node_unfinished_jobs": ("Jobs routed to the node and not finished",
                                              lambda n: sum(1 for i in d.assign.values() if i == n.index)),
            "tetriopt_node_gpu_busy_fraction": ("The node's busy GPU-time fraction",
                                                lambda n: n.stats.get("gpu_busy_fraction") or 0.0),
            "tetriopt_node_slo_attainment": ("The node's finished images on time, fraction",
                                             lambda n: n.stats.get("slo_attainment") or 0.0),
            "tetriopt_node_solve_ms_p99": ("The node's recent round solve time p99, ms",
                                           lambda n: n.stats.get("solve_ms_p99") or 0.0),
        }
        for name, (doc, f) in per.items():
            g = GaugeMetricFamily(name, doc, labels=["node"])
            for n in d.nodes:
                g.add_metric([str(n.index)], f(n))
            yield g
        for name, doc, f in (("tetriopt_node_routed", "Jobs routed to the node", lambda n: n.routed),
                             ("tetriopt_node_rounds", "Rounds the node planned", lambda n: n.stats.get("rounds") or 0),
                             ("tetriopt_node_restarts", "Times the node actor came back as a new incarnation",
                              lambda n: n.restarts)):
            c = CounterMetricFamily(name, doc, labels=["node"])
            for n in d.nodes:
                c.add_metric([str(n.index)], f(n))
            yield c
        for k, doc in (("rerouted", "Jobs re-routed after their node died"),
                       ("moved", "Not-started jobs moved off a node that fell behind"),
                       ("rejoined", "Nodes that came back up"),
                       ("duplicate_results", "Results for an image already finished (must stay 0)")):
            yield CounterMetricFamily(f"tetriopt_cluster_{k}", doc, value=d.counts[k])


def create_cluster_app(cfg: ServerConfig, nodes: int, router: str = "deadline-aware", address: str | None = None,
                       on_drained: Any = None):
    """The single-process server's app on a `ClusterService`, plus GET /v1/cluster."""
    from ..server.app import create_app

    svc = ClusterService(cfg, nodes, router, address)
    app = create_app(cfg, on_drained=on_drained, service=svc)

    @app.get("/v1/cluster")
    async def cluster() -> dict[str, Any]:
        return svc.cluster_view()

    return app


def default_nodes(cfg: ServerConfig) -> int:
    """Node actors to start: one per `tetriopt_node` slot, else per --gpus GPUs (cuda), else 1."""
    import ray

    res = ray.cluster_resources()
    if res.get(NODE_RESOURCE):
        return int(res[NODE_RESOURCE])
    if cfg.executor == "cuda" and res.get("GPU"):
        return max(1, int(res["GPU"]) // cfg.gpus)
    return 1


def serve_ray(cfg: ServerConfig, address: str, nodes: int | None, router: str) -> None:
    """`tetriopt serve --ray`: connect to Ray (address "local": start a new instance here), then
    run the front-end on uvicorn."""
    import ray

    from ..server.run import serve

    extra = {}
    if address == "local":  # a new Ray here: room for every node actor's CPU (a logical count)
        import os

        extra["num_cpus"] = max(os.cpu_count() or 1, (nodes or 1) + 1)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **extra)
    k = nodes or default_nodes(cfg)
    serve(cfg, lambda c, on_drained=None: create_cluster_app(c, k, router, on_drained=on_drained))
