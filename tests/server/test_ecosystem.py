"""Fields other servers' clients send, each through the stock `openai` client: vLLM-Omni/SGLang
names (num_inference_steps, seed, guidance_scale, negative_prompt), /v1/models, and gpt-image's
output_format / output_compression / quality."""

from __future__ import annotations

import base64
import json

import pytest

from tetriopt.server.executors.png import png_size, png_text

pytestmark = pytest.mark.server
openai = pytest.importorskip("openai")


@pytest.fixture
def oc(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_num_inference_steps_and_seed(oc, server):
    r = oc.images.generate(prompt="a fox", size="256x256", extra_body={"num_inference_steps": 7, "seed": 1234})
    extra = r.model_extra["tetriopt"]
    assert extra["steps"] == 7 and extra["seed"] == 1234
    job = server.service.store.get(extra["job_id"])
    assert job.steps == 7 and job.seed == 1234
    with pytest.raises(openai.BadRequestError) as e:
        oc.images.generate(prompt="x", size="256x256", extra_body={"num_inference_steps": 0})
    assert e.value.body["param"] == "num_inference_steps"


def test_guidance_scale_and_negative_prompt_reach_the_executor(oc, server):
    r = oc.images.generate(prompt="a fox", size="256x256", n=2,
                           extra_body={"guidance_scale": 3.5, "negative_prompt": "blurry", "steps": 2, "seed": 7})
    job = server.service.store.get(r.model_extra["tetriopt"]["job_id"])
    assert job.guidance_scale == 3.5 and job.negative_prompt == "blurry"
    # the sim executor writes what each image was asked to be into it (a PNG tEXt chunk)
    got = [json.loads(png_text(base64.b64decode(d.b64_json))["parameters"]) for d in r.data]
    assert got == [{"prompt": "a fox", "seed": 7 + i, "steps": 2, "guidance_scale": 3.5, "negative_prompt": "blurry"}
                   for i in range(2)]
    plain = oc.images.generate(prompt="a fox", size="256x256", extra_body={"steps": 2})
    got = json.loads(png_text(base64.b64decode(plain.data[0].b64_json))["parameters"])
    assert got["guidance_scale"] is None and got["negative_prompt"] is None
    with pytest.raises(openai.BadRequestError):
        oc.images.generate(prompt="x", size="256x256", extra_body={"guidance_scale": -1})


def test_models_list_and_retrieve(oc):
    assert [m.id for m in oc.models.list()] == ["fast-dit"]
    assert oc.models.retrieve("fast-dit").id == "fast-dit"
    with pytest.raises(openai.NotFoundError):
        oc.models.retrieve("dall-e-3")


@pytest.mark.parametrize("fmt,magic", [("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF"), ("png", b"\x89PNG")])
def test_output_format(oc, fmt, magic):
    pytest.importorskip("PIL")
    kw = {"output_compression": 60} if fmt != "png" else {}
    r = oc.images.generate(prompt="a fox", size="256x256", output_format=fmt, extra_body={"steps": 2}, **kw)
    img = base64.b64decode(r.data[0].b64_json)
    assert img.startswith(magic) and r.output_format == fmt
    if fmt == "png":
        assert png_size(img) == (256, 256)


def test_quality_scales_the_default_steps(oc):
    # the fixture server's default is 4 steps: low halves it, high doubles it; explicit steps win
    got = {q: oc.images.generate(prompt="p", size="256x256", quality=q).model_extra["tetriopt"]["steps"]
           for q in ("low", "medium", "high")}
    assert got == {"low": 2, "medium": 4, "high": 8}
    r = oc.images.generate(prompt="p", size="256x256", quality="high", extra_body={"steps": 3})
    assert r.model_extra["tetriopt"]["steps"] == 3 and r.quality == "high"
