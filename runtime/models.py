"""Model specs and adapters: which transformer a worker holds and how it runs on a token shard.

Where things live: every worker process holds one copy of the transformer (weights loaded once
at start-up) and, by default, the text encoders and VAE (`Aux`) on its own GPU: the leader of a
request's first GPU set encodes its prompt and shares the conditioning with the set, the leader
of its last set decodes the final latent. That keeps seconds of CPU work per request (T5-XXL,
the VAE) off the critical path and charges it to GPUs the plan knows about; it costs ~9.5 GiB
(FLUX's T5-XXL + CLIP + VAE in bf16) on every GPU. With an `aux_device` the driver process
holds them instead (one copy; the old placement) and ships conditioning and noise to the first set.

Latent layout for both models: packed 2x2 patches, [B, N, C*4] with N = (h/16)*(w/16) tokens in
row-major order and features ordered (channel, dy, dx), as FLUX's pipeline packs them. SD3's
patch-embedding convolution is applied as the equivalent linear map on these tokens, so a
sequence shard of the latent is all a rank needs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from tetriopt.runnable import image_tokens, size_problem

from .processors import FluxSPProcessor, SD3SPProcessor, SPContext

TINY_FLUX_CONFIG: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
    num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=False,
    axes_dims_rope=(4, 6, 6))
TINY_SD3_CONFIG: dict[str, Any] = dict(
    sample_size=32, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
    joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=16, out_channels=4,
    pos_embed_max_size=32)
TINY_TEXT_TOKENS = 8
TINY_SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
VAE_FACTOR = 8  # pixels per latent pixel (FLUX, SD3; the tiny decode keeps it)


@dataclass(frozen=True)
class ModelSpec:
    """What to load (picklable: it is sent to every spawned worker).

    kind: 'tiny-flux' / 'tiny-sd3' (random weights from a config, seeded so every rank builds
    the same model) or 'flux' / 'sd3' (diffusers `from_pretrained` of `path`: a local folder or
    hub id; nothing is downloaded unless the caller allows it).
    """

    kind: str = "tiny-flux"
    path: Optional[str] = None
    dtype: str = "float32"
    seed: int = 0
    guidance: float = 3.5  # FLUX.1-dev's distilled guidance embedding
    text_tokens: int = TINY_TEXT_TOKENS  # tiny random "text encoder" output length (FLUX: 512, SD3: 333)
    config: dict = field(default_factory=dict)  # overrides of the tiny config

    @property
    def family(self) -> str:
        return "sd3" if self.kind.endswith("sd3") else "flux"

    @property
    def tiny(self) -> bool:
        return self.kind.startswith("tiny-")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def name(self) -> str:
        return self.kind if self.tiny else f"{self.kind}:{self.path}"


def tokens_of(width: int, height: int) -> int:
    return image_tokens(width, height)


def check_size(width: int, height: int) -> None:
    why = size_problem(width, height)
    if why:
        raise ValueError(why)


def transformer_config(spec: ModelSpec) -> dict:
    """The transformer's config (tiny: the built-in one; real: `path/transformer/config.json`),
    read without loading weights, so the driver knows the head count every worker will have."""
    if spec.tiny:
        return {**(TINY_SD3_CONFIG if spec.family == "sd3" else TINY_FLUX_CONFIG), **spec.config}
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cls = SD3Transformer2DModel if spec.family == "sd3" else FluxTransformer2DModel
    check_weights(spec)
    return dict(cls.load_config(spec.path, subfolder="transformer", local_files_only=offline(spec)))


def offline(spec: ModelSpec) -> bool:
    """Never touch the network for a local folder; a hub id needs TETRIOPT_ALLOW_DOWNLOAD=1."""
    return os.path.isdir(spec.path or "") or os.environ.get("TETRIOPT_ALLOW_DOWNLOAD", "") != "1"


def check_weights(spec: ModelSpec) -> None:
    """One clear error, before any worker starts, when the weights are not where they should be."""
    path = spec.path or ""
    if os.path.isdir(path):
        missing = [d for d in ("transformer", "vae", "scheduler") if not os.path.isdir(os.path.join(path, d))]
        if missing or not os.path.isfile(os.path.join(path, "model_index.json")):
            raise FileNotFoundError(f"model folder {path!r} is not a diffusers pipeline folder (missing: "
                                    f"{', '.join(missing) or 'model_index.json'})")
        return
    if offline(spec):
        raise FileNotFoundError(
            f"model weights not found: {path!r} is not a local folder. Point --model-path or TETRIOPT_MODEL_PATH "
            "at a diffusers folder (e.g. `huggingface-cli download black-forest-labs/FLUX.1-dev --local-dir DIR`), "
            "or set TETRIOPT_ALLOW_DOWNLOAD=1 to fetch it from the Hub")


def load_options(spec: ModelSpec, device: torch.device) -> dict[str, Any]:
    """from_pretrained options: offline for local folders, weights streamed straight to the device
    with accelerate (without it diffusers builds the model and its state dict in host memory,
    ~48 GB per FLUX worker, before moving them)."""
    import importlib.util

    opts: dict[str, Any] = dict(local_files_only=offline(spec))
    if importlib.util.find_spec("accelerate") is not None:
        opts["low_cpu_mem_usage"] = True
        if device.type == "cuda":
            opts["device_map"] = {"": str(device)}
    return opts


# ---------------------------------------------------------------------------------------------
# Worker side: the transformer
# ---------------------------------------------------------------------------------------------
def load_transformer(spec: ModelSpec, device: torch.device):
    """The spec's transformer on `device`, eval mode, SP processors installed; returns (model, ctx)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cls = SD3Transformer2DModel if spec.family == "sd3" else FluxTransformer2DModel
    if spec.tiny:
        torch.manual_seed(spec.seed)  # identical random weights on every rank (of one device type)
        if device.type == "cuda":  # built in place, in its dtype: a full-size config is 22 GiB in bf16
            old = torch.get_default_dtype()
            torch.set_default_dtype(spec.torch_dtype)
            try:
                with torch.device(device):
                    model = cls(**transformer_config(spec))
            finally:
                torch.set_default_dtype(old)
        else:
            model = cls(**transformer_config(spec))
    else:
        model = cls.from_pretrained(spec.path, subfolder="transformer", torch_dtype=spec.torch_dtype,
                                    **load_options(spec, device))
    if next(model.parameters()).dtype != spec.torch_dtype:
        model = model.to(dtype=spec.torch_dtype)
    model = model.to(device).eval().requires_grad_(False)
    ctx = SPContext()
    proc = SD3SPProcessor if spec.family == "sd3" else FluxSPProcessor
    model.set_attn_processor(proc(ctx))
    return model, ctx


def scheduler_config(spec: ModelSpec) -> dict:
    if spec.tiny:
        return dict(TINY_SCHEDULER)
    from diffusers import FlowMatchEulerDiscreteScheduler

    return dict(FlowMatchEulerDiscreteScheduler.load_config(spec.path, subfolder="scheduler"))


@dataclass
class Conditioning:
    """A request's text conditioning: computed once, cached on every rank that has run it."""

    embeds: torch.Tensor  # [1, T, joint_attention_dim]
    pooled: torch.Tensor  # [1, pooled_projection_dim]

    def to(self, device: torch.device, dtype: torch.dtype) -> "Conditioning":
        return Conditioning(self.embeds.to(device, dtype), self.pooled.to(device, dtype))

    @staticmethod
    def stack(conds: Sequence["Conditioning"]) -> "Conditioning":
        """One conditioning for a batch: the requests' own, concatenated along the batch."""
        return Conditioning(torch.cat([c.embeds for c in conds]), torch.cat([c.pooled for c in conds]))


def per_sample(value: Union[float, torch.Tensor], batch: int, device: torch.device, dtype: torch.dtype,
               scale: float = 1.0) -> torch.Tensor:
    """A float or B values as a [B] tensor, scaled in float64 then rounded once to `dtype` (what
    torch.full of the float would give)."""
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1) * scale
    return t.expand(batch).to(device=device, dtype=dtype) if t.numel() == 1 else t.to(device=device, dtype=dtype)


class Adapter:
    """Runs one denoising forward on a shard [B, n, C] of the packed latent tokens."""

    def __init__(self, spec: ModelSpec, model, ctx: SPContext):
        self.spec, self.model, self.ctx = spec, model, ctx

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, start: int, width: int, height: int, sigma: Union[float, torch.Tensor],
                 cond: Conditioning) -> torch.Tensor:
        """Velocity for a batch [B, n, C] of same-size latents (tokens start..start+n of each):
        `sigma` a float or one per sample (a batch may hold requests at different steps), `cond`
        with batch B (or 1, shared)."""
        self.ctx.text_len = cond.embeds.shape[1]
        if self.spec.family == "sd3":
            return self._sd3(x, start, width, height, sigma, cond)
        return self._flux(x, start, width, height, sigma, cond)

    def _flux(self, x, start, width, height, sigma, cond):
        m = self.model
        gw = width // 16
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        img_ids = torch.stack((torch.zeros_like(pos), pos // gw, pos % gw), dim=1).to(x.dtype)
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=x.device, dtype=x.dtype)
        t = per_sample(sigma, x.shape[0], x.device, x.dtype)  # pipeline passes t/1000
        guidance = None
        if m.config.guidance_embeds:
            guidance = torch.full((x.shape[0],), self.spec.guidance, device=x.device, dtype=torch.float32)
        return m(hidden_states=x, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                 timestep=t, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]

    def _sd3(self, x, start, width, height, sigma, cond):
        """SD3Transformer2DModel.forward, restated on a token shard (its own forward wants the image)."""
        m = self.model
        p = m.config.patch_size
        if p != 2:
            raise ValueError("the packed latent layout assumes SD3 patch_size 2")
        pe = m.pos_embed
        h = pe.proj.weight
        tok = torch.nn.functional.linear(x, h.reshape(h.shape[0], -1), pe.proj.bias)
        if pe.layer_norm:
            tok = pe.norm(tok)
        if pe.pos_embed is not None:
            full = pe.cropped_pos_embed(height // VAE_FACTOR, width // VAE_FACTOR)
            tok = tok + full[:, start:start + x.shape[1]].to(tok.dtype)
        # fp32 like diffusers' pipeline: in bf16 timesteps near 1000 round to multiples of 4
        t = per_sample(sigma, x.shape[0], x.device, torch.float32, scale=1000.0)
        temb = m.time_text_embed(t, cond.pooled)
        enc = m.context_embedder(cond.embeds)
        for block in m.transformer_blocks:
            enc, tok = block(hidden_states=tok, encoder_hidden_states=enc, temb=temb)
        out = m.proj_out(m.norm_out(tok, temb))  # per token: (dy, dx, c)
        c = m.out_channels
        return out.reshape(*out.shape[:2], p, p, c).permute(0, 1, 4, 2, 3).reshape(*out.shape[:2], c * p * p)


# ---------------------------------------------------------------------------------------------
# Per request: text encoding, initial noise, decoding (on the leaders of the request's first and
# last GPU sets, or in the driver when the runtime is given an aux device)
# ---------------------------------------------------------------------------------------------
def initial_noise(tokens: int, channels: int, seed: int) -> torch.Tensor:
    """A request's initial packed latent [1, N, C] from its seed: fp32, drawn on the CPU so every
    rank and the driver draw the same numbers whatever their device."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, tokens, channels, generator=g)


def unpack_latent(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Packed [B, N, C*4] -> image layout [B, C, h/8, w/8] (what the VAE and SD3's pipeline take)."""
    b, _, f = x.shape
    gh, gw = height // 16, width // 16
    return x.reshape(b, gh, gw, f // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, f // 4, gh * 2, gw * 2)


def prompt_seed(prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little") & ((1 << 63) - 1)


class Aux:
    """Text encoders and VAE of a model, loaded once per process that runs them.

    Tiny models: the "text encoder" is a seeded random tensor from a SHA-256 of the prompt (same
    prompt, same conditioning, any machine), and the "VAE" is a fixed linear map from latent
    channels to RGB, 8x nearest-neighbour upsampled and squashed with tanh. Real models load the
    diffusers pipeline without its transformer and use its encode_prompt and vae.
    """

    def __init__(self, spec: ModelSpec, device: torch.device, pipe: Any = None):
        """`pipe`: an already built pipeline (its text encoders and VAE on `device`) instead of
        loading `spec.path` (benchmarks/gpu_check.py times full-size random ones)."""
        self.spec, self.device = spec, device
        self.pipe = pipe
        if pipe is not None:
            self.latent_channels = pipe.vae.config.latent_channels
        elif spec.tiny:
            cfg = transformer_config(spec)
            self.joint_dim, self.pooled_dim = cfg["joint_attention_dim"], cfg["pooled_projection_dim"]
            self.latent_channels = (cfg["in_channels"] // 4) if spec.family == "flux" else cfg["in_channels"]
            g = torch.Generator().manual_seed(spec.seed + 1)
            self.rgb = torch.randn(3, self.latent_channels, generator=g) / self.latent_channels ** 0.5
        else:
            from diffusers import FluxPipeline, StableDiffusion3Pipeline

            cls = StableDiffusion3Pipeline if spec.family == "sd3" else FluxPipeline
            check_weights(spec)
            opts = load_options(spec, device)
            opts.pop("device_map", None)  # pipelines take "cuda" (the current device) or "balanced" only
            if device.type == "cuda" and "low_cpu_mem_usage" in opts:
                torch.cuda.set_device(device)
                opts["device_map"] = "cuda"
            self.pipe = cls.from_pretrained(spec.path, transformer=None, torch_dtype=spec.torch_dtype, **opts)
            self.pipe.to(device)
            self.latent_channels = self.pipe.vae.config.latent_channels

    @property
    def channels(self) -> int:
        """Features per packed token."""
        return self.latent_channels * 4

    @torch.no_grad()
    def encode(self, prompt: str) -> Conditioning:
        if self.pipe is None:
            g = torch.Generator().manual_seed(prompt_seed(prompt))
            return Conditioning(torch.randn(1, self.spec.text_tokens, self.joint_dim, generator=g),
                                torch.randn(1, self.pooled_dim, generator=g))
        if self.spec.family == "sd3":
            emb, _, pooled, _ = self.pipe.encode_prompt(prompt, prompt, prompt, do_classifier_free_guidance=False,
                                                        device=self.device)
        else:
            emb, pooled, _ = self.pipe.encode_prompt(prompt, prompt, device=self.device)
        return Conditioning(emb, pooled)

    def noise(self, width: int, height: int, seed: int) -> torch.Tensor:
        """Initial packed latent [1, N, C], from the request's seed (fp32, on CPU)."""
        return initial_noise(tokens_of(width, height), self.channels, seed)

    def cond_shape(self) -> tuple[int, int, int]:
        """(text tokens, joint dim, pooled dim) of every prompt's conditioning: the pipelines pad
        prompts to a fixed length, so buffers for hand-offs can be sized before any prompt."""
        c = self.encode("")
        return c.embeds.shape[1], c.embeds.shape[2], c.pooled.shape[1]

    def unpack(self, x: torch.Tensor, width: int, height: int) -> torch.Tensor:
        return unpack_latent(x, width, height)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, width: int, height: int) -> np.ndarray:
        """Final packed latent -> uint8 RGB [h, w, 3]."""
        lat = self.unpack(x.to(torch.float32), width, height)
        if self.pipe is None:
            rgb = torch.einsum("rc,bchw->brhw", self.rgb, lat)
            rgb = rgb.repeat_interleave(VAE_FACTOR, dim=2).repeat_interleave(VAE_FACTOR, dim=3)
            img = (torch.tanh(rgb) + 1.0) * 127.5
        else:
            vae = self.pipe.vae
            lat = lat.to(self.device, vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
            img = (vae.decode(lat, return_dict=False)[0].float().clamp(-1, 1) + 1.0) * 127.5
        return img[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
