import pytest

from tetriopt import InputError, load_profile
from tetriopt.profile import tokens


def test_profiled_points_are_exact():
    p = load_profile("flux.1-dev-h100")
    assert p.step_us(1024, 1024, 1) == 153600
    assert p.step_us(1024, 1024, 4) == 58200


def test_interpolation_is_linear_in_tokens():
    p = load_profile("flux.1-dev-h100")
    a, b = p.step_us(1024, 1024, 2), p.step_us(2048, 2048, 2)
    t = tokens(1536, 1536)
    frac = (t - 4096) / (16384 - 4096)
    assert p.step_us(1536, 1536, 2) == round(a + (b - a) * frac)
    # a non-square size with the same token count costs the same
    assert p.step_us(2048, 512, 1) == p.step_us(1024, 1024, 1)


def test_outside_profile_is_an_error():
    p = load_profile("flux.1-dev-h100")
    with pytest.raises(InputError, match="outside the profile"):
        p.step_us(4096, 4096, 1)
    with pytest.raises(InputError, match="degree"):
        p.step_us(1024, 1024, 3)


def test_unknown_model():
    with pytest.raises(InputError, match="unknown model profile"):
        load_profile("no-such-model")


@pytest.mark.parametrize("name", ["flux.1-dev-h100", "flux.1-dev-h200", "sd3-medium-h200", "sd3-medium-a40"])
def test_shipped_profiles_record_sources_and_launch_bound_small_sizes(name):
    p = load_profile(name)
    for pt in p.points:
        assert pt.source, f"{name} {pt.width}px has no source"
    small = p.points[0]
    # launch-bound: at the smallest size, more GPUs never make a step faster than one GPU by much
    assert min(small.step_us.values()) >= 0.9 * small.step_us[1]
    # a round holds at least one step of everything at every degree
    assert max(v for pt in p.points for v in pt.step_us.values()) <= p.default_round_us


@pytest.mark.parametrize("name", ["flux.1-dev-h100", "flux.1-dev-h200", "sd3-medium-h200", "sd3-medium-a40"])
def test_batch_dimension_is_monotone_and_never_dearer_than_serial(name):
    p = load_profile(name)
    assert p.batch_sizes == (1, 2, 3, 4)
    for pt in p.points:
        for k in p.degrees:
            prev = pt.us(k)
            for b in p.batch_sizes[1:]:
                t = p.step_us(pt.width, pt.height, k, b)
                assert prev <= t <= b * pt.us(k) + 1, (name, pt.width, k, b)
                assert pt.batch_source.get(f"{b}:{k}"), (name, pt.width, k, b)
                prev = t


def test_measured_h200_batch_points_carry_their_source():
    for name, ms in (("flux.1-dev-h200", 354.6), ("sd3-medium-h200", 52.8)):
        p = load_profile(name)
        assert p.step_us(1024, 1024, 1, 2) == round(ms * 1000)
        pt = next(q for q in p.points if q.width == 1024)
        assert pt.batch_source["2:1"].startswith("measured")
        assert pt.batch_source["2:2"].startswith("modelled")
    # launch-bound small sizes: a batch of 4 SD3 512 px images costs one step on one H200
    p = load_profile("sd3-medium-h200")
    assert p.step_us(512, 512, 1, 4) == p.step_us(512, 512, 1)


def test_batch_errors(tmp_path):
    import json
    from pathlib import Path
    p = load_profile("flux.1-dev-h100")
    src = Path(__file__).resolve().parents[1] / "models" / "flux.1-dev-h100.json"
    with pytest.raises(InputError, match="batch size"):
        p.step_us(512, 512, 1, 5)
    data = json.loads(src.read_text())
    del data["points"][0]["batches"]["3"]
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError, match="same batch sizes"):
        load_profile(str(f))
    data = json.loads(src.read_text())
    for pt in data["points"]:
        pt.pop("batches")
    f.write_text(json.dumps(data))
    assert load_profile(str(f)).batch_sizes == (1,)


def test_package_profiles_are_the_models_folder_ones():
    """models/derive.py writes each profile twice: models/ (read by people) and the package (loaded)."""
    from pathlib import Path

    from tetriopt.profile import profiles_dir

    models = Path(__file__).resolve().parents[1] / "models"
    shipped = {p.name: p.read_bytes() for p in models.glob("*.json")}
    packaged = {p.name: p.read_bytes() for p in profiles_dir().iterdir() if p.name.endswith(".json")}
    assert shipped and packaged == shipped
