"""Whole pipelines from a local diffusers folder (issue 14 items 6, 7), built offline: tiny random
FLUX and SD3 pipelines (tokenizers made in code, saved with save_pretrained) loaded by the
runtime exactly as real weights would be.

Equality with diffusers: the runtime's image (prompt encoded on the first set's leader, steps at
degree 1 then 2, decoded on the last set's leader) equals FluxPipeline's / StableDiffusion3Pipeline's
on the same folder, seed (the same initial latent) and step count within 1/255 per pixel (fp32,
CPU). Degree 2 moves the latent by ~1e-7 (see test_runtime), far below a pixel's rounding.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.runtime
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from tetriopt_runtime import GenRequest, ModelSpec, Runtime  # noqa: E402
from tetriopt_runtime.models import unpack_latent  # noqa: E402
from tetriopt_runtime.png import decode_png  # noqa: E402
from tetriopt_runtime.tiny_pipeline import write_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {k: write_tiny_pipeline(k, root / k) for k in ("flux", "sd3")}


@pytest.mark.parametrize("kind", ["flux", "sd3"])
def test_runtime_image_equals_diffusers_pipeline(folders, kind, monkeypatch, capsys):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompt, px, steps, seed = "a red fox on a hill at night", 64, 4, 5
    req = GenRequest("d", prompt, px, px, steps, seed=seed)
    with Runtime(ModelSpec(kind, path=str(folders[kind])), world_size=2, timeout_s=120) as rt:
        res = rt.generate([req], [[("d", (1,), 2)], [("d", (0, 1), 2)]])
        noise = rt.noise(px, px, seed)
    ours = decode_png(res.images["d"]).astype(np.float64)
    cls = StableDiffusion3Pipeline if kind == "sd3" else FluxPipeline
    pipe = cls.from_pretrained(folders[kind], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    extra = dict(guidance_scale=1.0) if kind == "sd3" else {}  # SD3 conditional only, as the runtime runs it
    latents = unpack_latent(noise, px, px) if kind == "sd3" else noise
    ref = pipe(prompt, height=px, width=px, num_inference_steps=steps, latents=latents, output_type="np",
               **extra).images[0] * 255.0
    err = np.abs(ours - ref).max()
    with capsys.disabled():
        print(f"\n[pipeline] {kind}: max |runtime - diffusers| = {err:.3f} / 255 (image std {ref.std():.1f})")
    assert ours.shape == ref.shape == (px, px, 3)
    assert ref.std() > 1.0  # a real picture, not a flat field
    assert err <= 1.0


def test_missing_weights_fail_with_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TETRIOPT_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(FileNotFoundError, match="TETRIOPT_MODEL_PATH"):
        Runtime(ModelSpec("flux", path="black-forest-labs/FLUX.1-dev"), world_size=1)
    (tmp_path / "transformer").mkdir()
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        Runtime(ModelSpec("flux", path=str(tmp_path)), world_size=1)
