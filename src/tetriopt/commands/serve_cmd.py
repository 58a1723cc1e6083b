"""`tetriopt serve`: the OpenAI-compatible image server (needs the `serve` extra).

The server package imports FastAPI and uvicorn, so it is imported inside the command only:
the solver library and `tetriopt solve` keep working without them.
"""

from __future__ import annotations

import os

import click

from ..errors import InputError
from ..policies import policy_help
from .params import FiniteFloat


def _rounds(value: str | None) -> frozenset[int]:
    if not value:
        return frozenset()
    try:
        return frozenset(int(x) for x in value.split(","))
    except ValueError:
        raise InputError("sim_fail_rounds", value, "must be comma-separated round numbers") from None


@click.command()
@click.option("--gpus", type=click.IntRange(min=1), default=8, show_default=True, help="GPUs in the cluster.")
@click.option("--model", default=None, help="Served model name (default: the profile's model).")
@click.option("--profile", default="flux.1-dev-h100", show_default=True,
              help="Cost profile: a name in models/ or a path to a profile JSON.")
@click.option("--island-size", type=click.IntRange(min=1), default=None,
              help="GPUs per fast-link island (default: all GPUs in one island).")
@click.option("--round-ms", type=click.FloatRange(min=0.001), default=None,
              help="Round length (default: the profile's default_round_ms).")
@click.option("--policy", default="cpsat", show_default=True,
              help=policy_help())
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Let same-size requests share steps (the policy decides; see `tetriopt solve --batching`).")
@click.option("--immediate-start/--no-immediate-start", default=True, show_default=True,
              help="Start new requests at once on GPUs the running round leaves idle.")
@click.option("--time-limit-ms", type=FiniteFloat("--time-limit-ms", 0.001, 3_600_000), default=None,
              help="Per-round solver limit (default: 20% of a round).")
@click.option("--solver-mode", type=click.Choice(["thread", "process"]), default="thread", show_default=True,
              help="Run the policy on a worker thread or in a worker process.")
@click.option("--executor", type=click.Choice(["sim", "cpu", "cuda"]), default="sim", show_default=True,
              help="sim: virtual GPUs taking the profile's time (placeholder PNGs); cpu/cuda: runtime/.")
@click.option("--model-path", envvar="TETRIOPT_MODEL_PATH", default=None,
              help="cpu/cuda: local diffusers pipeline folder with the weights (env TETRIOPT_MODEL_PATH).")
@click.option("--sp-backend", type=click.Choice(["auto", "own", "yunchang", "xfuser"]), default="auto",
              show_default=True, help="cpu/cuda: SP attention; own = torch all-to-all (the CPU/gloo path), "
                                      "yunchang, xfuser (CUDA); auto picks xfuser > yunchang > own.")
@click.option("--compile", "compile_", is_flag=True,
              help="cpu/cuda: torch.compile the transformer blocks, warmed at start-up for the profile's sizes.")
@click.option("--aux-device", default=None,
              help="cpu/cuda: run text encoders and VAE in the server process on this device (cpu, cuda:0); "
                   "default: on the leader of each request's first / last GPU set.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, show_default=True)
@click.option("--api-key", default=None, help="Require 'Authorization: Bearer KEY' (or env TETRIOPT_API_KEY).")
@click.option("--public-url", default=None,
              help="Base of `url` results, e.g. https://images.example.com (default: the address listened on; "
                   "never the request's Host header).")
@click.option("--max-queue", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Pending images before new requests get 429.")
@click.option("--max-backlog-gpu-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pending work (GPU-seconds at each image's cheapest degree) before 429 (default: 60 x GPUs).")
@click.option("--max-request-gpu-s", type=click.FloatRange(min=0, min_open=True), default=240.0, show_default=True,
              help="Most work one request may ask for (n x steps at its cheapest degree, GPU-seconds); above: 400.")
@click.option("--max-plan-requests", type=click.IntRange(min=1), default=128, show_default=True,
              help="Most pending images a round is planned on (the most urgent ones): bounds planning time.")
@click.option("--admission-headroom", type=click.FloatRange(min=0, max=1, min_open=True), default=0.7,
              show_default=True, help="Fraction of the cluster's GPU-time the joint admission test may promise.")
@click.option("--deadline-guard", type=click.FloatRange(min=0, max=1, max_open=True), default=0.1, show_default=True,
              help="Plan (and admit) each request to finish this share of its SLO (at most two rounds) before its "
                   "deadline while it still can: a margin for late rounds and for big images the planner would "
                   "give up in their last rounds; 0: plan to the deadline itself.")
@click.option("--late-slo-scale", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="A request that can no longer meet its deadline is planned (and counted by admission) against "
                   "arrival + this x its SLO (if out of reach too: its earliest finish plus a round), still "
                   "reported as missed; 0: it runs on GPU time the on-time requests leave.")
@click.option("--admission-light-door/--no-admission-light-door", default=True, show_default=True,
              help="At light load (the offered work below capacity, at most --admission-foresight pending, 10 s of "
                   "offers seen), admit every request that can meet its deadline alone and leave keeping it to the "
                   "planner, which then plans to the requests' own deadlines (less 25 ms; late ones on leftover "
                   "time), as `tetriopt solve` does; off: the fluid admission tests and the guard band apply there "
                   "too.")
@click.option("--admission-foresight", type=click.IntRange(min=0), default=16, show_default=True,
              help="Up to this many pending images, a request only the joint test's headroom refuses is accepted when a "
                   "forward schedule of the pending work with it still meets everything it met before, while the offered "
                   "work is below the cluster's capacity (0: off).")
@click.option("--store", "store_path", default="tetriopt-jobs.sqlite3", show_default=True,
              help="SQLite file keeping async jobs across restarts and kill -9 ('' : in memory only).")
@click.option("--max-body-bytes", type=click.IntRange(min=256), default=1 << 20, show_default=True)
@click.option("--default-steps", type=click.IntRange(min=1, max=1000), default=20, show_default=True)
@click.option("--default-size", default="1024x1024", show_default=True)
@click.option("--default-slo-scale", type=click.FloatRange(min=1.0), default=5.0, show_default=True,
              help="Deadline when a request gives none: its earliest finish plus (scale - 1) times its latency alone.")
@click.option("--admission", type=click.Choice(["reject", "best-effort"]), default="reject", show_default=True,
              help="A deadline that cannot be met (alone: 400; beside accepted work: 429): refuse it, "
                   "or accept it best-effort (best_effort: true).")
@click.option("--job-ttl-s", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="How long finished jobs stay retrievable.")
@click.option("--disconnect-grace-s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="A sync client with an Idempotency-Key that disconnects: how long its job waits for a retry "
                   "before it is cancelled (without a key: cancelled at once).")
@click.option("--drain-timeout-s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM, the longest wait for accepted jobs to finish.")
@click.option("--seed", type=int, default=0, show_default=True, help="Solver random seed.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--sim-fail-rounds", default=None, hidden=True,
              help="Fault injection: crash the sim executor half-way through these executed rounds (1-based, e.g. 2,5).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Scale out on Ray: one node actor (round loop, planner, executor) per GPU node of --gpus "
                   "GPUs, this process the HTTP front-end. ADDRESS of a running cluster ('auto': the one "
                   "started on this machine), or none: start a new one here. Needs the ray extra.")
@click.option("--nodes", type=click.IntRange(min=1), default=None,
              help="With --ray: node actors (default: the cluster's tetriopt_node resources, else GPUs / --gpus, "
                   "else 1).")
@click.option("--router", default="deadline-aware", show_default=True,
              help="With --ray: round-robin, least-work or deadline-aware (429 when no node can keep a request).")
def serve(gpus, model, profile, island_size, round_ms, policy, batching, immediate_start, time_limit_ms, solver_mode, executor, model_path,
          sp_backend, compile_, aux_device, host, port,
          api_key, public_url, max_queue, max_backlog_gpu_s, max_request_gpu_s, max_plan_requests, admission_headroom,
          admission_foresight, admission_light_door, deadline_guard, late_slo_scale, store_path, max_body_bytes, default_steps, default_size,
          default_slo_scale, admission, job_ttl_s,
          disconnect_grace_s, drain_timeout_s, seed, log_level, sim_fail_rounds, ray_address, nodes,
          router) -> None:
    """Serve the OpenAI Images API, scheduling requests round by round on GPUS GPUs (per node with --ray)."""
    try:
        from ..server.config import ServerConfig
        from ..server.run import serve as run_server
    except ModuleNotFoundError as e:
        raise click.ClickException(f"`tetriopt serve` needs the serve extra ({e.name} is missing): "
                                   "pip install 'tetriopt[serve]'") from None
    cfg = ServerConfig(gpus=gpus, profile=profile, model=model, island_size=island_size, round_ms=round_ms,
                       policy=policy, batching=batching, immediate_start=immediate_start,
                       time_limit_ms=time_limit_ms, solver_mode=solver_mode, seed=seed,
                       executor=executor, model_path=model_path, sp_backend=sp_backend, compile=compile_,
                       aux_device=aux_device, host=host, port=port,
                       api_key=api_key or os.environ.get("TETRIOPT_API_KEY") or None,
                       public_url=public_url, max_queue=max_queue, max_backlog_gpu_s=max_backlog_gpu_s,
                       max_request_gpu_s=max_request_gpu_s, max_plan_requests=max_plan_requests,
                       admission_headroom=admission_headroom, admission_foresight=admission_foresight,
                       admission_light_door=admission_light_door,
                       deadline_guard=deadline_guard, late_slo_scale=late_slo_scale,
                       store_path=store_path or None, max_body_bytes=max_body_bytes, default_steps=default_steps,
                       default_size=default_size, default_slo_scale=default_slo_scale, admission=admission,
                       job_ttl_s=job_ttl_s, disconnect_grace_s=disconnect_grace_s, drain_timeout_s=drain_timeout_s,
                       sim_fail_rounds=_rounds(sim_fail_rounds), log_level=log_level)
    if ray_address is None:
        run_server(cfg)
        return
    from ..cluster.router import make_router

    make_router(router)
    try:
        from ..cluster.ray_serve import serve_ray
    except ModuleNotFoundError as e:
        raise click.ClickException(f"`tetriopt serve --ray` needs the ray extra ({e.name} is missing): "
                                   "pip install 'tetriopt[ray]'") from None
    serve_ray(cfg, ray_address, nodes, router)
