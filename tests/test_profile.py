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


def test_package_profiles_are_the_models_folder_ones():
    """models/derive.py writes each profile twice: models/ (read by people) and the package (loaded)."""
    from pathlib import Path

    from tetriopt.profile import profiles_dir

    models = Path(__file__).resolve().parents[1] / "models"
    shipped = {p.name: p.read_bytes() for p in models.glob("*.json")}
    packaged = {p.name: p.read_bytes() for p in profiles_dir().iterdir() if p.name.endswith(".json")}
    assert shipped and packaged == shipped
