"""Flow-matching Euler schedule: sigmas computed identically on every rank from (steps, tokens).

Only the step index has to travel with a request when it changes GPU set; the sigmas are a pure
function of the scheduler config, the step count and the image token count.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch


def flow_sigmas(scheduler_config: Mapping[str, Any], steps: int, image_tokens: int) -> torch.Tensor:
    """steps+1 sigmas (last 0) as diffusers' FLUX/SD3 pipelines set them."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler.from_config(dict(scheduler_config))
    if sched.config.get("use_dynamic_shifting", False):
        c = sched.config
        base_len, max_len = c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096)
        base_s, max_s = c.get("base_shift", 0.5), c.get("max_shift", 1.15)
        m = (max_s - base_s) / (max_len - base_len)
        mu = image_tokens * m + (base_s - m * base_len)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
    else:
        sched.set_timesteps(num_inference_steps=steps)
    return sched.sigmas.to(torch.float32).cpu()


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * v, in fp32 like diffusers' scheduler. Per element,
    so it runs on a sequence shard unchanged. `sigma`, `sigma_next`: floats, or one per sample of
    a batch [B, n, C] (requests at different steps); the difference is taken in float64 and
    rounded once, as for floats, so a batched step equals the unbatched ones."""
    if isinstance(sigma, float) and isinstance(sigma_next, float):
        d: Any = sigma_next - sigma
    else:
        d = (torch.as_tensor(sigma_next, dtype=torch.float64) - torch.as_tensor(sigma, dtype=torch.float64))
        d = d.to(device=x.device, dtype=torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    return (x.to(torch.float32) + d * v.to(torch.float32)).to(x.dtype)


def denoise_step(adapter: Any, x: torch.Tensor, start: int, width: int, height: int, sigma, sigma_next,
                 cond: Any) -> torch.Tensor:
    """One denoising step of a shard: the transformer's velocity, then the Euler update. `x` may
    be a batch [B, n, C] of same-size requests with per-sample sigmas and stacked conditioning
    (`Conditioning.stack`): the worker's step for batched assignments."""
    v = adapter.velocity(x, start, width, height, sigma, cond)
    return euler_step(x, v, sigma, sigma_next)
