"""A worker process: one per GPU (or CPU rank), holding the transformer and executing jobs.

Every worker walks the same global task list (see plan.py) and acts on the tasks of its ranks:
- start of a task: take the request's latent shard (initial noise from the driver, the shard it
  already holds when the set is unchanged, or a slice of the full latent received from the
  previous set's leader);
- run the steps: the latent split along the sequence over the set, SP attention over its group;
- end of a task: the shard stays where it is (requests persist across jobs, so a server can run
  one round per job); after the last step the set's leader gathers the full latent for the driver;
- hand-off: when the walk reaches a task on a different set, the old set gathers the latent on
  its leader, which sends it (and the conditioning, to ranks that never held it) to the new set.
  Doing it at the receiving task's place means sends and receives of every rank pair are issued
  in the same global order, as NCCL requires (its point-to-point ignores tags).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist

from .groups import build_groups
from .models import (Adapter, Aux, Conditioning, ModelSpec, initial_noise, load_transformer, scheduler_config,
                     tokens_of)
from .plan import Task, aligned_blocks
from .sampler import denoise_step, flow_sigmas
from .sp_attention import make_attention


@dataclass(frozen=True)
class ReqMeta:
    """What every rank must know about a request to size buffers and schedules."""

    width: int
    height: int
    steps: int
    tokens: int
    channels: int
    text_tokens: int
    joint_dim: int
    pooled_dim: int


@dataclass(frozen=True)
class Init:
    """How a request starts on its first set: a latent (None: noise from `seed`, drawn on each
    rank) and conditioning (None: the set's leader encodes `prompt` and shares it)."""

    prompt: str
    seed: int
    latent: Optional[torch.Tensor] = None
    cond: Optional[Conditioning] = None


@dataclass
class Job:
    job_id: int
    tasks: list[Task]
    meta: dict[str, ReqMeta]
    inits: dict[str, Init] = field(default_factory=dict)
    checkpoint: bool = False  # leaders also report the full latent after every task (see executor.py)
    forget: tuple[str, ...] = ()  # requests cancelled since the last job: drop what this rank holds of them


@dataclass
class RequestStore:
    """What a rank holds for requests in flight, kept between jobs."""

    meta: dict[str, ReqMeta] = field(default_factory=dict)
    shards: dict[str, torch.Tensor] = field(default_factory=dict)  # latent shard on its current set
    conds: dict[str, Conditioning] = field(default_factory=dict)  # conditioning cached on this rank
    outbox: dict[str, torch.Tensor] = field(default_factory=dict)  # full latent this rank keeps for itself
    sigmas: dict[str, list[float]] = field(default_factory=dict)
    finished: dict[str, torch.Tensor] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)  # decoded final image (uint8 numpy) on the leader


@dataclass
class WorkerConfig:
    rank: int
    world: int
    port: int
    spec: ModelSpec
    device: str  # 'cpu' or 'cuda'
    sp_backend: str
    timeout_s: float
    threads: int
    aux: bool = True  # this worker holds the text encoders and VAE (else the driver does)
    compile: bool = False  # torch.compile the transformer blocks (one graph per shard shape)
    warm_sizes: tuple[tuple[int, int], ...] = ()  # (width, height) run once per set at start-up
    cond_shape: Optional[tuple[int, int, int]] = None  # (text tokens, joint dim, pooled dim) when aux is off
    share_gpu: bool = False  # every rank on cuda:0 over gloo (a one-GPU correctness check; NCCL refuses it)


class Worker:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.rank = cfg.rank
        if cfg.device == "cuda":
            index = 0 if cfg.share_gpu else cfg.rank
            torch.cuda.set_device(index)
            self.device = torch.device("cuda", index)
            backend = "gloo" if cfg.share_gpu else "nccl"
        else:
            self.device = torch.device("cpu")
            backend = "gloo"
            torch.set_num_threads(cfg.threads)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{cfg.port}", rank=cfg.rank,
                                world_size=cfg.world, timeout=timedelta(seconds=cfg.timeout_s))
        # gloo moves CUDA tensors only in collectives (all_to_all, all_gather, broadcast);
        # point-to-point hand-offs and gathers are staged through host memory
        self.stage = self.device.type == "cuda" and backend == "gloo"
        self.groups = build_groups(cfg.world, backend, cfg.timeout_s, singletons=cfg.sp_backend == "xfuser")
        self.attention = {g: make_attention(cfg.sp_backend, self.groups[g], len(g), g.index(self.rank),
                                            ring_group=self.groups.get(("ring", self.rank)))
                          for g in aligned_blocks(cfg.world) if self.rank in g}
        self.aux = Aux(cfg.spec, self.device) if cfg.aux else None
        self.cond_shape = self.aux.cond_shape() if self.aux else cfg.cond_shape
        model, ctx = load_transformer(cfg.spec, self.device)
        if cfg.compile:
            compile_blocks(model)
        self.adapter = Adapter(cfg.spec, model, ctx)
        self.sched_cfg = scheduler_config(cfg.spec)
        self.dtype = cfg.spec.torch_dtype
        self.state = RequestStore()
        t0 = time.perf_counter()
        self.warm_communicators()
        self.comm_warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.warm_shapes(cfg.warm_sizes)
        self.shape_warm_s = time.perf_counter() - t0

    def warm_communicators(self) -> None:
        """Create every communicator now, not inside a request's step: NCCL makes a set's
        communicator on its first collective and one per rank pair on its first send/recv (GF-DiT
        measured 778 ms for one group). All ranks walk the same order (sets, then pairs), so the
        exchanges cannot deadlock."""
        x = torch.ones(1, device="cpu" if self.stage else self.device)
        for g in aligned_blocks(self.cfg.world):
            if len(g) > 1 and self.rank in g:
                dist.all_reduce(x, group=self.groups[g])
        for a in range(self.cfg.world):  # every pair a hand-off may use
            for b in range(a + 1, self.cfg.world):
                if self.rank == a:
                    dist.send(x, b)
                elif self.rank == b:
                    dist.recv(x, a)
        self._sync()

    @torch.no_grad()
    def warm_shapes(self, sizes) -> None:
        """One forward per (set, size) this rank may run, so kernels (and torch.compile graphs)
        exist before the first request; every member of a set runs it together."""
        from tetriopt.runnable import split_problem

        heads = self.adapter.model.config.num_attention_heads
        shape = self.cond_shape
        cond = Conditioning(torch.zeros(1, shape[0], shape[1], device=self.device, dtype=self.dtype),
                            torch.zeros(1, shape[2], device=self.device, dtype=self.dtype))
        channels = self.adapter.model.config.in_channels * (4 if self.cfg.spec.family == "sd3" else 1)
        for g in aligned_blocks(self.cfg.world):
            if self.rank not in g:
                continue
            for w, h in sizes:
                tokens = tokens_of(w, h)
                if split_problem(tokens, heads, len(g)):
                    continue
                n = tokens // len(g)
                self.adapter.ctx.attention = self.attention[g]
                x = torch.zeros(1, n, channels, device=self.device, dtype=self.dtype)
                self.adapter.velocity(x, g.index(self.rank) * n, w, h, 1.0, cond)
        self._sync()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, job: Job, report) -> dict[str, Any]:
        """Execute a job's tasks; `report(timing, latent, final)` is called as each task this rank
        leads ends (latent: the full latent after a request's last task, or after every task
        when the job asks for checkpoints; else None).

        Request state persists across jobs (a server runs one round per job): shards stay on
        their set until a later task on another set asks for them. A batch's member tasks are
        consecutive: each takes its shard in at its own place (hand-offs keep the global order),
        and the stacked steps run at the last member's place.
        """
        rank = self.rank
        st = self.state
        for rid in job.forget:  # cancelled: free its shard, conditioning and anything kept for it
            for d in (st.meta, st.shards, st.conds, st.outbox, st.sigmas, st.finished, st.images):
                d.pop(rid, None)
        pending: list[Any] = []  # isend handles (tensors kept alive until waited)
        batch: list[tuple[Task, torch.Tensor, dict[str, float]]] = []  # members taken in, not yet stepped
        for t in job.tasks:
            if t.is_first:  # a new request, or one resumed from the driver's copy after a restart
                for d in (st.shards, st.conds, st.outbox, st.sigmas, st.finished):
                    d.pop(t.request, None)
                st.meta[t.request] = job.meta[t.request]
            m = st.meta[t.request]
            moving = t.prev_gpus is not None and t.prev_gpus != t.gpus
            # hand-off at the receiving task's place in the global order: the old set gathers,
            # its leader sends (every rank pair issues sends and receives in the same order)
            if moving and rank in t.prev_gpus:
                full = self._gather(st.shards.pop(t.request), t.prev_gpus)
                if rank == t.prev_gpus[0]:
                    for dst in t.gpus:
                        if dst == rank:
                            st.outbox[t.request] = full
                            continue
                        pending.append(self._isend(full, dst, 2 * t.index))
                        if dst in t.needs_cond:
                            c = st.conds[t.request]
                            pending.append(self._isend(c.embeds, dst, 2 * t.index + 1))
                            pending.append(self._isend(c.pooled, dst, 2 * t.index + 1))
            if rank not in t.gpus:
                self._end_task(t, None, report)
                continue
            batch.append(self._take_in(t, m, job))
            if t.closes_batch:
                for bt, timing in self._run_steps(batch, job):
                    self._end_task(bt, timing, report)
                batch = []
        for h, _ in pending:
            h.wait()
        return dict(rank=rank, held=sorted(st.meta))

    def _end_task(self, t: Task, timing: Optional[dict[str, Any]], report) -> None:
        """After a task: every rank drops what it cached for a finished request; the leader reports."""
        st = self.state
        if t.is_last:
            for d in (st.shards, st.conds, st.outbox, st.sigmas, st.meta):
                d.pop(t.request, None)
            if self.rank == t.leader:
                report(timing, st.finished.pop(t.request), True, st.images.pop(t.request, None))
        elif self.rank == t.leader:
            report(timing, st.finished.pop(t.request, None), False, None)

    def _take_in(self, t: Task, m: "ReqMeta", job: Job) -> tuple[Task, torch.Tensor, dict[str, float]]:
        """This rank's shard of t's request at the start of t: initial noise (or the driver's
        copy), the shard it kept, or a slice of the latent handed over by the previous set."""
        rank, dev, st = self.rank, self.device, self.state
        k, i = t.degree, t.gpus.index(rank)
        if m.tokens % k:
            raise ValueError(f"{m.tokens} tokens of {t.request!r} do not split over {k} ranks")
        n = m.tokens // k
        t0 = time.perf_counter()
        encode_ms = 0.0
        if t.is_first:
            init: Init = job.inits[t.request]
            if init.cond is not None:
                st.conds[t.request] = init.cond.to(dev, self.dtype)
            else:
                te = time.perf_counter()
                st.conds[t.request] = self._encode_on_set(init.prompt, t, m)
                encode_ms = (time.perf_counter() - te) * 1e3
            full = init.latent if init.latent is not None else initial_noise(m.tokens, m.channels, init.seed)
            x = full[:, i * n:(i + 1) * n].to(dev, self.dtype).contiguous()
        elif t.prev_gpus == t.gpus:
            x = st.shards.pop(t.request)
        else:
            src = t.prev_gpus[0]
            if src == rank:
                full = st.outbox.pop(t.request)
            else:
                full = self._recv((1, m.tokens, m.channels), src, 2 * t.index)
                if rank in t.needs_cond:
                    emb = self._recv((1, m.text_tokens, m.joint_dim), src, 2 * t.index + 1)
                    pooled = self._recv((1, m.pooled_dim), src, 2 * t.index + 1)
                    st.conds[t.request] = Conditioning(emb, pooled)
            x = full[:, i * n:(i + 1) * n].contiguous()
        self._sync()
        took = dict(began_s=t0, encode_ms=encode_ms, handoff_in_ms=(time.perf_counter() - t0) * 1e3 - encode_ms)
        if t.request not in st.sigmas:
            st.sigmas[t.request] = flow_sigmas(self.sched_cfg, m.steps, m.tokens).tolist()
        return t, x, took

    def _run_steps(self, batch: list[tuple[Task, torch.Tensor, dict[str, float]]],
                   job: Job) -> list[tuple[Task, dict[str, Any]]]:
        """The steps of one assignment on this rank's shards: one request, or a batch of
        same-size requests stacked along dim 0 with per-sample sigmas (members may be at
        different steps) and stacked conditioning; then each member's gather / decode. Returns
        each member's task and timing."""
        rank, st = self.rank, self.state
        t0 = batch[0][0]
        m = st.meta[t0.request]
        for t, _, _ in batch[1:]:
            mt = st.meta[t.request]
            if (mt.width, mt.height) != (m.width, m.height) or t.gpus != t0.gpus or t.steps != t0.steps:
                raise ValueError(f"batch {list(t0.batch)}: members differ in size, set or steps")
        i, n = t0.gpus.index(rank), m.tokens // t0.degree
        self.adapter.ctx.attention = self.attention[t0.gpus]
        step_ms = []
        if len(batch) == 1:
            t, x, _ = batch[0]
            sg = st.sigmas[t.request]
            for s in range(t.step_start, t.step_start + t.steps):
                ts = time.perf_counter()
                x = denoise_step(self.adapter, x, i * n, m.width, m.height, sg[s], sg[s + 1], st.conds[t.request])
                self._sync()
                step_ms.append((time.perf_counter() - ts) * 1e3)
            xs = [x]
        else:
            x = torch.cat([x for _, x, _ in batch])
            cond = Conditioning.stack([st.conds[t.request] for t, _, _ in batch])
            for j in range(t0.steps):
                ts = time.perf_counter()
                now = torch.tensor([st.sigmas[t.request][t.step_start + j] for t, _, _ in batch], dtype=torch.float64)
                nxt = torch.tensor([st.sigmas[t.request][t.step_start + j + 1] for t, _, _ in batch],
                                   dtype=torch.float64)
                x = denoise_step(self.adapter, x, i * n, m.width, m.height, now, nxt, cond)
                self._sync()
                step_ms.append((time.perf_counter() - ts) * 1e3)
            xs = [x[b:b + 1].contiguous() for b in range(len(batch))]
        out = []
        for (t, _, took), x in zip(batch, xs):
            tg = time.perf_counter()
            decode_ms = 0.0
            if t.is_last or job.checkpoint:
                full = self._gather(x, t.gpus)
                if rank == t.leader:
                    st.finished[t.request] = full.to("cpu", torch.float32, copy=True)
            if not t.is_last:
                st.shards[t.request] = x
            self._sync()
            t3 = time.perf_counter()
            if t.is_last and rank == t.leader and self.aux is not None:
                st.images[t.request] = self.aux.decode(full, m.width, m.height)
                decode_ms = (time.perf_counter() - t3) * 1e3
            # began_s / ended_s: time.perf_counter(), CLOCK_MONOTONIC on Linux, so comparable across
            # the workers and the driver of one machine (how far tasks drift from their planned starts)
            out.append((t, dict(task=t.index, request=t.request, gpus=list(t.gpus), steps=t.steps,
                                batch=list(t.batch), handoff_in_ms=took["handoff_in_ms"],
                                encode_ms=took["encode_ms"], step_ms=step_ms, gather_ms=(t3 - tg) * 1e3,
                                decode_ms=decode_ms, began_s=batch[0][2]["began_s"], ended_s=time.perf_counter())))
        return out

    def _encode_on_set(self, prompt: str, t: Task, m: ReqMeta) -> Conditioning:
        """The set's leader encodes the prompt; the other ranks of the set get it by broadcast."""
        if self.rank == t.leader:
            c = self.aux.encode(prompt).to(self.device, self.dtype)
        else:
            c = Conditioning(torch.empty(1, m.text_tokens, m.joint_dim, device=self.device, dtype=self.dtype),
                             torch.empty(1, m.pooled_dim, device=self.device, dtype=self.dtype))
        if t.degree > 1:
            g = self.groups[t.gpus]
            out = []
            for x in (c.embeds, c.pooled):
                y = x.cpu() if self.stage else x
                dist.broadcast(y, t.leader, group=g)
                out.append(y.to(self.device))
            c = Conditioning(*out)
        return c

    def _isend(self, x: torch.Tensor, dst: int, tag: int) -> tuple[Any, torch.Tensor]:
        """Start sending x; returns (handle, the tensor to keep alive until it is waited on)."""
        y = x.cpu() if self.stage else x
        return dist.isend(y, dst, tag=tag), y

    def _recv(self, shape: tuple[int, ...], src: int, tag: int) -> torch.Tensor:
        y = torch.empty(shape, dtype=self.dtype, device="cpu" if self.stage else self.device)
        dist.recv(y, src, tag=tag)
        return y.to(self.device)

    def _gather(self, x: torch.Tensor, gpus: tuple[int, ...]) -> torch.Tensor:
        """The full latent on gpus[0] (other ranks get their shard back)."""
        if len(gpus) == 1:
            return x
        y = x.cpu() if self.stage else x.contiguous()
        parts = [torch.empty_like(y) for _ in gpus] if self.rank == gpus[0] else None
        dist.gather(y, parts, dst=gpus[0], group=self.groups[gpus])
        return torch.cat(parts, dim=1).to(self.device) if parts is not None else x

    def startup_report(self, seconds: float) -> dict[str, Any]:
        out: dict[str, Any] = dict(startup_s=round(seconds, 3), comm_warm_s=round(self.comm_warm_s, 3),
                                   shape_warm_s=round(self.shape_warm_s, 3), cond_shape=self.cond_shape)
        if self.device.type == "cuda":
            out["gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 3)
        return out

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def compile_blocks(model) -> None:
    """torch.compile every transformer block in place (shapes static: one graph per shard shape;
    the SP collectives inside attention are graph breaks). Blocks rather than the whole model so
    the SD3 adapter, which calls blocks one by one, is compiled the same way."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    backend = os.environ.get("TETRIOPT_COMPILE_BACKEND", "inductor")  # 'eager': tracing only (CPU dry runs)
    for name in ("transformer_blocks", "single_transformer_blocks"):
        for block in getattr(model, name, ()):
            block.compile(dynamic=False, backend=backend)


PARENT_CHECK_S = 2.0  # an idle worker looks this often whether the driver's process still exists


def worker_main(cfg: WorkerConfig, jobs, results) -> None:
    """Process entry point: start up, report ready, then serve jobs until a None arrives."""
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    try:
        t0 = time.perf_counter()
        w = Worker(cfg)
        results.send(("ready", cfg.rank, w.startup_report(time.perf_counter() - t0)))
    except BaseException:
        results.send(("error", cfg.rank, traceback.format_exc()))
        return
    parent = multiprocessing.parent_process()
    try:
        while True:
            try:
                job: Optional[Job] = jobs.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    break  # the driver's process ended without closing us (killed, or exited): do not linger
                continue
            if job is None:
                break
            try:
                def report(timing, latent, final, image, _id=job.job_id):
                    # numpy, not a tensor: a sent tensor is a shared-memory handle the driver
                    # fetches from this process later, which fails once this process has died
                    results.send(("task", cfg.rank, (_id, timing, None if latent is None else latent.numpy(), final,
                                                    image)))

                results.send(("done", cfg.rank, (job.job_id, w.run(job, report))))
            except BaseException:
                results.send(("error", cfg.rank, traceback.format_exc()))
                break  # groups may be wedged after a failed collective: the driver restarts us
    finally:
        w.close()
