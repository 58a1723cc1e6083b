"""RSSP: resolution-specific static SP. Valid plans, one fixed degree per resolution, sticky sets,
and the hindsight ("oracle static") mapping is at least as good as the mappings it starts from."""

from __future__ import annotations

import pytest

import tetriopt
from tetriopt.bench import oracle_mapping
from tetriopt.errors import InputError
from tetriopt.instance import parse_instance
from tetriopt.policies import make_policy
from tetriopt.policies.rssp import PAPER_FLUX_H100, RSSP, doubling_rule
from tetriopt.validate import validate_result
from tetriopt.workload import generate


@pytest.fixture(scope="module")
def inst():
    return parse_instance(generate("flux.1-dev-h100", 8, 60, 20.0, mix="skewed", slo_scale=1.1, seed=3), name="w")


@pytest.mark.parametrize("name", ["rssp", "rssp:256=1,512=1,1024=2,2048=8", "rssp:256=2,512=2,1024=4,2048=4"])
def test_valid_and_degree_fixed_per_resolution_and_sticky(inst, name):
    res = tetriopt.solve(inst, name)
    assert validate_result(inst, res.to_json()) == []
    assert res.summary["requests"] == 60
    pol = make_policy(name)
    tetriopt.solve(inst, pol)
    mapping = pol.mapping
    by_id = inst.by_id
    sets_of: dict[str, set] = {}
    for _, a in res.assignments:
        r = by_id[a.request]
        assert a.degree == mapping[r.width], f"{a.request} ({r.width} px) ran at {a.degree}, mapping {mapping}"
        sets_of.setdefault(a.request, set()).add(a.gpus)
    assert all(len(s) == 1 for s in sets_of.values()), "a request changed GPU set (RSSP is non-preemptive)"


def test_mapping_parse_and_errors():
    assert make_policy("rssp:256=1,512=1,1024=2,2048=8").mapping == PAPER_FLUX_H100
    assert make_policy("rssp:256=1,2048=8").name == "rssp:256=1,2048=8"
    for bad in ["rssp:256=3", "rssp:", "rssp:abc", "rssp:256=0"]:
        with pytest.raises(InputError):
            make_policy(bad)


def test_doubling_rule_on_flux_h100(inst):
    # 256/512 px: a second GPU makes a step slower; 2048 px: every doubling pays
    m = doubling_rule(inst.profile, inst.degrees, inst.round_us)
    assert m[256] == 1 and m[512] == 1 and m[2048] == 8


def test_oracle_no_worse_than_its_starts(inst):
    mapping, info = oracle_mapping(inst)
    met = tetriopt.solve(inst, RSSP(mapping)).summary["met"]
    assert met == info["met"]
    for start in [doubling_rule(inst.profile, inst.degrees, inst.round_us), {256: 1, 512: 1, 1024: 1, 2048: 1}]:
        assert met >= tetriopt.solve(inst, RSSP(start)).summary["met"]


def test_valid_on_islands_and_oracle_on_sd3():
    data = generate("sd3-medium-a40", 4, 40, 20.0, mix="uniform", slo_scale=1.2, seed=5, islands=[[0, 1], [2, 3]])
    inst = parse_instance(data, name="sd3")
    mapping, info = oracle_mapping(inst)
    res = tetriopt.solve(inst, RSSP(mapping))
    assert validate_result(inst, res.to_json()) == []
    assert res.summary["met"] == info["met"]
    for _, a in res.assignments:
        assert a.gpus in inst.cluster.sets(a.degree)
