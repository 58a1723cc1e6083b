"""Model adapters in-process: the sharded forward equals diffusers' own forward, and the
from_pretrained code path loads a saved (tiny) model from a local folder without a network."""

import pytest

pytestmark = pytest.mark.runtime
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tetriopt_runtime.models import (TINY_FLUX_CONFIG, TINY_SD3_CONFIG, Adapter, Aux, ModelSpec,  # noqa: E402
                                     load_transformer, scheduler_config)
from tetriopt_runtime.sampler import flow_sigmas  # noqa: E402

W, H = 128, 64


def _stock_velocity(kind, model, aux, x, cond, sigma):
    """What the unmodified diffusers model (stock attention processors) predicts."""
    if kind == "flux":
        gh, gw = H // 16, W // 16
        ids = torch.zeros(gh, gw, 3)
        ids[..., 1] += torch.arange(gh)[:, None]
        ids[..., 2] += torch.arange(gw)[None, :]
        return model(hidden_states=x, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                     timestep=torch.tensor([sigma]), img_ids=ids.reshape(-1, 3),
                     txt_ids=torch.zeros(cond.embeds.shape[1], 3), return_dict=False)[0]
    out = model(hidden_states=aux.unpack(x, W, H), encoder_hidden_states=cond.embeds,
                pooled_projections=cond.pooled, timestep=torch.tensor([sigma * 1000]), return_dict=False)[0]
    return out.reshape(1, 4, H // 16, 2, W // 16, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, -1, 16)


@pytest.mark.parametrize("kind", ["flux", "sd3"])
def test_adapter_matches_stock_diffusers_forward(kind):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    spec = ModelSpec(kind=f"tiny-{kind}")
    model, ctx = load_transformer(spec, torch.device("cpu"))
    aux = Aux(spec, torch.device("cpu"))
    x, cond = aux.noise(W, H, 1), aux.encode("hello")
    got = Adapter(spec, model, ctx).velocity(x, 0, W, H, 0.7, cond)
    torch.manual_seed(spec.seed)
    stock = (FluxTransformer2DModel(**TINY_FLUX_CONFIG) if kind == "flux" else SD3Transformer2DModel(**TINY_SD3_CONFIG)).eval()
    with torch.no_grad():
        ref = _stock_velocity(kind, stock, aux, x, cond, 0.7)
    assert got.shape == ref.shape == x.shape
    assert (got - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize("kind", ["flux", "sd3"])
def test_from_pretrained_local_folder(kind, tmp_path, monkeypatch):
    from diffusers import FlowMatchEulerDiscreteScheduler

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = ModelSpec(kind=f"tiny-{kind}")
    model, _ = load_transformer(tiny, torch.device("cpu"))
    model.save_pretrained(tmp_path / "transformer")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(tmp_path / "scheduler")
    real = ModelSpec(kind=kind, path=str(tmp_path))
    loaded, _ = load_transformer(real, torch.device("cpu"))
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert scheduler_config(real)["shift"] == 3.0


def test_sigmas_follow_the_scheduler_config():
    plain = flow_sigmas({"shift": 1.0}, 4, 64)  # diffusers: linspace(1, 1/1000) then a final 0
    assert plain.tolist() == pytest.approx([1.0, 0.667, 0.334, 0.001, 0.0], abs=1e-6)
    flux = flow_sigmas({"use_dynamic_shifting": True, "shift": 3.0}, 4, 4096)
    assert flux[0] == pytest.approx(1.0) and flux[-1] == 0.0
    assert all(f > p for f, p in zip(flux[1:-1], plain[1:-1]))  # 4096 tokens: shifted toward noise


def test_tiny_text_encoding_is_a_function_of_the_prompt():
    aux = Aux(ModelSpec("tiny-flux"), torch.device("cpu"))
    a, b, c = aux.encode("cat"), aux.encode("cat"), aux.encode("dog")
    assert torch.equal(a.embeds, b.embeds) and not torch.equal(a.embeds, c.embeds)
