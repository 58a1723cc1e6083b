"""Everything `tetriopt serve` can be told, in one frozen object the app and the loop share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerConfig:
    gpus: int = 8
    profile: str = "flux.1-dev-h100"      # name in models/ or a path to a profile JSON
    model: str | None = None              # served model name (default: the profile's model)
    island_size: int | None = None        # GPUs per fast-link island (default: one island)
    round_ms: float | None = None         # default: the profile's default_round_ms
    policy: str = "cpsat"
    batching: bool = False                # same-size requests may share steps (policy option)
    immediate_start: bool = False         # arrivals start at once on GPUs the running round leaves idle
    time_limit_ms: float | None = None    # per-round solver limit (default: 20% of a round)
    solver_workers: int = 1
    solver_mode: str = "thread"           # thread | process
    seed: int = 0
    executor: str = "sim"                 # sim | cpu | cuda
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queue: int = 256                  # pending images (not finished) before 429
    max_body_bytes: int = 1 << 20
    max_prompt_chars: int = 32000
    max_n: int = 10
    max_steps: int = 1000
    default_steps: int = 20
    default_size: str = "1024x1024"
    default_slo_scale: float = 5.0        # no deadline given: earliest finish + (scale-1) x best latency alone
    admission: str = "reject"             # reject | best-effort (a deadline no schedule can meet)
    job_ttl_s: float = 600.0              # how long finished jobs (and images) stay retrievable
    drain_timeout_s: float = 300.0        # SIGTERM: most time spent finishing accepted work
    sim_fail_rounds: frozenset[int] = field(default_factory=frozenset)  # sim: crash these executed rounds (1-based)
    log_level: str = "info"
