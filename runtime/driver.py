"""The runtime's front: spawns one worker per GPU/CPU rank and executes round plans on them.

The driver checks and compiles plans (sizes that do not split over a task's degree are refused
before dispatch), hands every worker the same task list with each request's start (prompt and
seed; a latent when it resumes), collects reports (timings, final latents, decoded images,
checkpoints) and writes PNGs. The text encoders and VAE live in the workers (the leaders of a
request's first and last sets run them) unless an aux device puts them here.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.multiprocessing as mp
from multiprocessing import connection as mp_connection

from tetriopt.runnable import split_problem

from .models import Aux, Conditioning, ModelSpec, check_size, initial_noise, tokens_of, transformer_config
from .plan import PlanError, Task, compile_plan, first_ranks
from .png import encode_png
from .sp_attention import resolve_backend
from .worker import Init, Job, ReqMeta, WorkerConfig, worker_main


@dataclass(frozen=True)
class GenRequest:
    id: str
    prompt: str
    width: int
    height: int
    steps: int
    seed: int = 0
    # carried from the API for the model to use; not applied yet (FLUX.1-dev's distilled guidance is the
    # model spec's value for every request; a negative prompt needs classifier-free guidance's second pass)
    guidance_scale: float | None = None
    negative_prompt: str | None = None


@dataclass
class RunResult:
    images: dict[str, bytes]  # PNG
    latents: dict[str, torch.Tensor]  # final packed latents [1, N, C], fp32 on CPU
    timings: list[dict[str, Any]]  # per task, from its leader: handoff_in_ms, step_ms, gather_ms
    encode_ms: dict[str, float] = field(default_factory=dict)
    decode_ms: dict[str, float] = field(default_factory=dict)
    wall_ms: float = 0.0  # workers' execution of the plan (dispatch to last result)


def batch_problem(members: Sequence[str], size: Any) -> Optional[str]:
    """Why these requests cannot share steps (None: they can, or it is one request): a batch
    stacks latents, so every member needs the same width and height (`size[rid]`)."""
    sizes = {tuple(size[rid]) for rid in members}
    if len(sizes) > 1:
        return f"batch {list(members)} mixes sizes {sorted(sizes)}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runtime:
    """`with Runtime(ModelSpec('tiny-flux'), world_size=4) as rt: rt.generate(requests, rounds)`.

    device 'cpu' runs gloo workers; 'cuda' runs one NCCL worker per GPU (rank r on cuda:r), or with
    share_gpu every rank on cuda:0 over gloo (degree switching checked on a one-GPU machine).
    sp_backend: 'own' (all_to_all_single + SDPA; the CPU path), 'yunchang', 'xfuser' (CUDA), 'auto'.
    aux_device: None (default) puts the text encoders and VAE in every worker, on its device:
    the leader of a request's first set encodes, the leader of its last set decodes. A device
    name ('cpu', 'cuda:0') keeps them in this process on that device instead.
    A worker error or a timeout closes the runtime (groups may be wedged); start a new one.
    `startup_s` is how long the workers took to come up (weights, groups, warm-up).
    """

    def __init__(self, spec: ModelSpec, world_size: int, device: str = "cpu", sp_backend: str = "auto",
                 timeout_s: float = 120.0, aux_device: Optional[str] = None, threads: Optional[int] = None,
                 compile: bool = False, warm_sizes: Sequence[tuple[int, int]] = (), share_gpu: bool = False):
        if world_size < 1 or world_size & (world_size - 1):
            raise ValueError(f"world_size must be a power of two, got {world_size}")
        if device == "cuda" and not share_gpu and torch.cuda.device_count() < world_size:
            raise ValueError(f"{world_size} workers need {world_size} GPUs, found {torch.cuda.device_count()}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {device!r}")
        self.spec, self.world, self.device, self.timeout_s = spec, world_size, device, timeout_s
        self.sp_backend = resolve_backend(sp_backend, device)
        self.share_gpu = share_gpu
        self.threads = threads or max(1, (os.cpu_count() or 1) // world_size)
        self.compiled, self.warm_sizes = compile, tuple((int(w), int(h)) for w, h in warm_sizes)
        self.aux = Aux(spec, torch.device(aux_device)) if aux_device else None
        cfg = transformer_config(spec)
        self.heads = int(cfg["num_attention_heads"])
        self.channels = int(cfg["in_channels"]) * (4 if spec.family == "sd3" else 1)  # per packed token
        self.cond_shape = self.aux.cond_shape() if self.aux else None
        self.worker_info: list[dict[str, Any]] = []
        self.worker_held: dict[int, list[str]] = {}  # per rank, the requests it holds state of after the last job
        self.startup_s = 0.0
        self._procs: list[Any] = []
        self._jobs: list[Any] = []
        self._readers: dict[Any, int] = {}  # one pipe per worker: its reading end -> rank
        self._job_id = 0
        self._start()

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        t0 = time.perf_counter()
        ctx = mp.get_context("spawn")
        port = free_port()
        for r in range(self.world):
            q = ctx.Queue()
            cfg = WorkerConfig(rank=r, world=self.world, port=port, spec=self.spec, device=self.device,
                               sp_backend=self.sp_backend, timeout_s=self.timeout_s, threads=self.threads,
                               aux=self.aux is None, compile=self.compiled, warm_sizes=self.warm_sizes,
                               cond_shape=self.cond_shape, share_gpu=self.share_gpu)
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(target=worker_main, args=(cfg, q, writer), daemon=True)
            p.start()
            # Only the worker holds the writing end: if it dies, even half-way through a message,
            # the reader gets EOF. (A queue shared by all workers stays open, and a worker killed
            # while writing to it left the driver blocked forever on the rest of the message.)
            writer.close()
            self._readers[reader] = r
            self._procs.append(p)
            self._jobs.append(q)
        info: dict[int, dict[str, Any]] = {}
        while len(info) < self.world:
            kind, rank, payload = self._get()
            if kind != "ready":
                self.close()
                raise RuntimeError(f"worker {rank} failed to start:\n{payload}")
            info[rank] = payload
        self.worker_info = [info[r] for r in range(self.world)]
        if self.cond_shape is None:
            self.cond_shape = tuple(self.worker_info[0]["cond_shape"])
        self.startup_s = time.perf_counter() - t0

    def _get(self) -> tuple[str, int, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            for conn in mp_connection.wait(list(self._readers), timeout=1.0):
                try:
                    return conn.recv()
                except (EOFError, OSError):  # its worker died
                    del self._readers[conn]
                    conn.close()
            dead = [p.pid for p in self._procs if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                self.close(wait_s=0.0 if dead else 10.0)  # survivors may be stuck with a dead peer
                why = f"workers {dead} died" if dead else f"no answer in {self.timeout_s:.0f} s"
                raise RuntimeError(f"runtime stopped: {why}") from None

    def close(self, wait_s: float = 10.0) -> None:
        """Stop the workers: ask, wait up to wait_s each, then kill."""
        for q, p in zip(self._jobs, self._procs):
            if p.is_alive():
                try:
                    q.put(None)
                except Exception:
                    pass
        for p in self._procs:
            p.join(timeout=wait_s)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for conn in self._readers:
            conn.close()
        self._procs, self._jobs, self._readers = [], [], {}

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- execution ---------------------------------------------------------------------------
    def split_problem(self, width: int, height: int, degree: int) -> Optional[str]:
        """Why this runtime's model cannot run a width x height request on `degree` ranks (None: it can)."""
        return split_problem(tokens_of(width, height), self.heads, degree)

    def compile(self, requests: Sequence[GenRequest], rounds: Iterable[Any]) -> list[Task]:
        for r in requests:
            check_size(r.width, r.height)
        if len({r.id for r in requests}) != len(requests):
            raise ValueError("request ids must be unique")
        tasks = compile_plan(rounds, {r.id: r.steps for r in requests}, self.world)
        size = {r.id: (r.width, r.height) for r in requests}
        for t in tasks:
            why = self.split_problem(*size[t.request], t.degree) or batch_problem(t.batch, size)
            if why:
                raise PlanError(f"request {t.request!r} on GPUs {t.gpus}: {why}")
        return tasks

    def meta_of(self, r: GenRequest) -> ReqMeta:
        t, j, p = self.cond_shape
        return ReqMeta(width=r.width, height=r.height, steps=r.steps, tokens=tokens_of(r.width, r.height),
                       channels=self.channels, text_tokens=t, joint_dim=j, pooled_dim=p)

    def noise(self, width: int, height: int, seed: int) -> torch.Tensor:
        """The initial latent workers draw for a request (the same numbers on every rank)."""
        return initial_noise(tokens_of(width, height), self.channels, seed)

    def init_of(self, r: GenRequest, latent: Optional[torch.Tensor] = None,
                cond: Optional[Conditioning] = None) -> tuple[Init, float]:
        """How request r starts on its first set; with the aux models here, its conditioning is
        encoded now (returns the ms it took), else the set's leader encodes it."""
        if cond is None and self.aux is not None:
            t0 = time.perf_counter()
            cond = self.aux.encode(r.prompt)
            return Init(r.prompt, r.seed, latent, cond), (time.perf_counter() - t0) * 1e3
        return Init(r.prompt, r.seed, latent, cond), 0.0

    def image_of(self, r: GenRequest, latent: torch.Tensor, image: Any) -> tuple[bytes, float]:
        """PNG of a finished request: the worker's decoded image, or decoded here (returns ms)."""
        if image is not None:
            return encode_png(image), 0.0
        t0 = time.perf_counter()
        png = encode_png(self.aux.decode(latent, r.width, r.height))
        return png, (time.perf_counter() - t0) * 1e3

    def _prepare(self, requests: Sequence[GenRequest]) -> tuple[dict, dict, dict]:
        meta, inits, encode_ms = {}, {}, {}
        for r in requests:
            check_size(r.width, r.height)
            meta[r.id] = self.meta_of(r)
            inits[r.id], ms = self.init_of(r)
            if self.aux is not None:
                encode_ms[r.id] = ms
        return meta, inits, encode_ms

    def alive(self) -> bool:
        """Every worker process is running (a dead one means: close and start a new runtime)."""
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def run_tasks(self, tasks: list[Task], meta: dict, inits: dict,
                  on_task: Callable[[dict[str, Any], Optional[torch.Tensor], bool, Any], None],
                  checkpoint: bool = False, forget: Sequence[str] = ()) -> float:
        """Send one job (tasks in global order) to every worker; on_task(timing, latent|None, final,
        image|None) is called as each task ends (latent: the final one on a request's last task,
        and with `checkpoint` the full latent after every task; image: the decoded uint8 image
        when a worker decoded it). `forget`: requests whose state every worker drops first
        (cancelled). Returns ms."""
        if not self._procs:
            raise RuntimeError("runtime is closed")
        firsts = first_ranks([t for t in tasks if t.is_first])
        self._job_id += 1
        t0 = time.perf_counter()
        for rank, q in enumerate(self._jobs):
            mine = {rid: v for rid, v in inits.items() if rank in firsts.get(rid, ())}
            q.put(Job(job_id=self._job_id, tasks=tasks, meta=meta, inits=mine, checkpoint=checkpoint,
                      forget=tuple(forget)))
        done = 0
        while done < self.world:
            kind, rank, payload = self._get()
            if kind == "task":
                _, timing, latent, final, image = payload
                on_task(timing, None if latent is None else torch.from_numpy(latent), final, image)
            elif kind == "done":
                done += 1
                self.worker_held[rank] = list(payload[1].get("held", ()))
            else:
                self.close()
                raise RuntimeError(f"worker {rank} failed:\n{payload}")
        return (time.perf_counter() - t0) * 1e3

    def generate(self, requests: Sequence[GenRequest], rounds: Iterable[Any], decode: bool = True) -> RunResult:
        """Run a whole plan (rounds of (request id, GPU set, steps)); returns PNGs and final latents."""
        if not self._procs:
            raise RuntimeError("runtime is closed")
        tasks = self.compile(requests, rounds)
        meta, inits, encode_ms = self._prepare(requests)
        by_id = {r.id: r for r in requests}
        latents: dict[str, torch.Tensor] = {}
        images: dict[str, bytes] = {}
        decode_ms: dict[str, float] = {}
        timings: list[dict[str, Any]] = []

        def on_task(timing: dict[str, Any], latent: Optional[torch.Tensor], final: bool, image: Any) -> None:
            timings.append(timing)
            rid = timing["request"]
            if timing.get("encode_ms"):
                encode_ms[rid] = timing["encode_ms"]
            if final:
                latents[rid] = latent
                if image is not None:
                    decode_ms[rid] = timing["decode_ms"]
                    images[rid] = encode_png(image)

        wall_ms = self.run_tasks(tasks, meta, inits, on_task)
        timings.sort(key=lambda d: d["task"])
        if decode and self.aux is not None:
            for rid, lat in latents.items():
                images[rid], decode_ms[rid] = self.image_of(by_id[rid], lat, None)
        return RunResult(images=images if decode else {}, latents=latents, timings=timings, encode_ms=encode_ms,
                         decode_ms=decode_ms, wall_ms=wall_ms)
