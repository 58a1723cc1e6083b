"""Everything `tetriopt serve` can be told, in one frozen object the app and the loop share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..policies import Policy


@dataclass(frozen=True)
class ServerConfig:
    gpus: int = 8
    profile: str = "flux.1-dev-h100"      # name in models/ or a path to a profile JSON
    model: str | None = None              # served model name (default: the profile's model)
    island_size: int | None = None        # GPUs per fast-link island (default: one island)
    round_ms: float | None = None         # default: the profile's default_round_ms
    policy: str = "cpsat"
    policy_factory: Callable[[], Policy] | None = None  # embedding: a policy object of one's own (overrides policy)
    batching: bool = False                # same-size requests may share steps (policy option)
    immediate_start: bool = False         # arrivals start at once on GPUs the running round leaves idle
    time_limit_ms: float | None = None    # per-round solver limit (default: 20% of a round)
    solver_workers: int = 1
    solver_mode: str = "thread"           # thread | process
    seed: int = 0
    executor: str = "sim"                 # sim | cpu | cuda
    model_path: str | None = None         # cpu/cuda: local diffusers folder (default $TETRIOPT_MODEL_PATH)
    sp_backend: str = "auto"              # cpu/cuda: SP attention (auto | own | yunchang | xfuser)
    compile: bool = False                 # cpu/cuda: torch.compile the blocks, warmed for the profile's sizes
    aux_device: str | None = None         # cpu/cuda: text encoders + VAE here (default: on the set leaders)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    public_url: str | None = None         # base of `url` results (default: the address the server listens on)
    max_queue: int = 1024                 # pending images (not finished) before 429
    max_backlog_gpu_s: float | None = None  # pending work (GPU-s at the cheapest degree) before 429; None: 60 s x GPUs
    max_request_gpu_s: float = 240.0      # one request's work (n x steps, GPU-s at the cheapest degree); above: 400
    max_plan_requests: int = 128          # requests a round is planned on (the most urgent; bounds planning time)
    admission_headroom: float = 0.7       # joint test capacity fraction (1: the ideal packing the planner assumes)
    deadline_guard: float = 0.1           # plan to finish this share of the SLO early (at most 2 rounds) while possible
    late_slo_scale: float = 1.5           # a request past hope is planned against arrival + this x SLO (0: leftover time)
    admission_light_door: bool = True     # light load: admit what can meet its deadline alone, plan as offline (no band, no late targets)
    admission_foresight: int = 16         # up to this many pending, a forward schedule may accept what the joint test refuses
    max_body_bytes: int = 1 << 20
    max_prompt_chars: int = 32000
    max_n: int = 10
    max_steps: int = 1000
    default_steps: int = 20
    default_size: str = "1024x1024"
    default_slo_scale: float = 5.0        # no deadline given: earliest finish + (scale-1) x best latency alone
    admission: str = "reject"             # reject | best-effort (a deadline no schedule can meet)
    job_ttl_s: float = 600.0              # how long finished jobs (and images) stay retrievable
    disconnect_grace_s: float = 10.0      # a sync client with an Idempotency-Key gone: wait this long for a retry
    drain_timeout_s: float = 30.0         # SIGTERM: most time spent finishing accepted work (Kubernetes: 30 s)
    store_path: str | None = None         # SQLite file for async jobs (None: in memory, lost at exit)
    sim_fail_rounds: frozenset[int] = field(default_factory=frozenset)  # sim: crash these executed rounds (1-based)
    log_level: str = "info"
