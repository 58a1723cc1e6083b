"""A tiny random whole diffusers pipeline (tokenizers, text encoders, transformer, VAE, scheduler)
written to a local folder, built offline: the tokenizers are made in code, every module from a
small config with seeded random weights, all saved with `save_pretrained`.

Why: the real-model path (`ModelSpec("flux"|"sd3", path=...)`: `from_pretrained` of a local
diffusers folder, the pipeline's own `encode_prompt` and VAE) must run in CI, where no weights
can be fetched; and diffusers' own pipeline on the same folder is the reference the runtime's
images are compared with. `python -m tetriopt_runtime.tiny_pipeline flux|sd3 DIR` writes one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

WORDS = ("a an the of on in with and red green blue black white small big cat dog fox boat car tree house "
         "hill lighthouse sea sky night day photo painting of at by").split()
CLIP_LEN = 16  # model_max_length of the tiny CLIP tokenizers (77 in the real ones)


def _tokenizer(max_len: int, bos: bool):
    """A word-level fast tokenizer over WORDS (+ specials), wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = "<s> $A </s>" if bos else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_len)


def _clip(hidden: int, proj: int | None, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=len(WORDS) + 4, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CLIP_LEN,
                         projection_dim=proj or hidden, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return (CLIPTextModelWithProjection if proj else CLIPTextModel)(cfg).eval()


def _t5(d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(WORDS) + 4, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
                   num_heads=2, pad_token_id=0, eos_token_id=3, decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval()


def _vae(latent_channels: int, shift: float, scale: float, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                         scaling_factor=scale, shift_factor=shift, use_quant_conv=False,
                         use_post_quant_conv=False).eval()


def build_flux(seed: int = 0, heads: int = 4) -> Any:
    """FluxPipeline: CLIP (pooled, 16) + T5 (32) text encoders, 4-channel VAE (8x), tiny transformer
    (`heads` x 16 attention heads: fewer than the degree makes the runtime refuse that degree)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=heads, joint_attention_dim=32,
                                         pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                            base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                            max_image_seq_len=4096)
    return FluxPipeline(scheduler=sched, vae=_vae(4, 0.1, 0.6, seed + 1), text_encoder=_clip(16, None, seed + 2),
                        tokenizer=_tokenizer(CLIP_LEN, True), text_encoder_2=_t5(32, seed + 3),
                        tokenizer_2=_tokenizer(512, False), transformer=transformer.eval())


def build_sd3(seed: int = 0) -> Any:
    """StableDiffusion3Pipeline: two CLIPs with projection (8 + 8 pooled) and T5 (32), 4-channel VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=4, num_layers=2,
                                        attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                                        caption_projection_dim=64, pooled_projection_dim=16, out_channels=4,
                                        pos_embed_max_size=32)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=sched, vae=_vae(4, 0.05, 1.2, seed + 1),
        text_encoder=_clip(8, 8, seed + 2), tokenizer=_tokenizer(CLIP_LEN, True),
        text_encoder_2=_clip(8, 8, seed + 3), tokenizer_2=_tokenizer(CLIP_LEN, True),
        text_encoder_3=_t5(32, seed + 4), tokenizer_3=_tokenizer(256, False))


FLUX_DEV_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                            guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def build_flux_dev_aux(device: str | torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """FLUX.1-dev's published text encoders (CLIP-L, T5-XXL) and VAE configs with random weights,
    built in place on `device` in `dtype`, as a FluxPipeline without transformer: what the runtime
    runs per request, for timing encode and decode where no weights can be fetched. The
    tokenizers are the word-level ones above (timing depends on the padded length, 77 / 512)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                num_attention_heads=12, max_position_embeddings=77,
                                                projection_dim=768, bos_token_id=2, eos_token_id=3)).eval()
            t5 = T5EncoderModel(T5Config(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                         feed_forward_proj="gated-gelu", vocab_size=32128)).eval()
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                                use_post_quant_conv=False).eval()
    finally:
        torch.set_default_dtype(old)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return FluxPipeline(scheduler=sched, vae=vae, text_encoder=clip, tokenizer=_tokenizer(77, True),
                        text_encoder_2=t5, tokenizer_2=_tokenizer(512, False), transformer=None)


def write_tiny_pipeline(kind: str, folder: str | Path, seed: int = 0, **options: Any) -> Path:
    """Build the tiny `kind` ('flux' or 'sd3') pipeline and save it as a diffusers folder."""
    pipe = {"flux": build_flux, "sd3": build_sd3}[kind](seed, **options)
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("flux", "sd3"):
        sys.exit("usage: python -m tetriopt_runtime.tiny_pipeline flux|sd3 DIR")
    print(write_tiny_pipeline(sys.argv[1], sys.argv[2]))
