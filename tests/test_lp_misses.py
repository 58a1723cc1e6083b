"""benchmarks/lp_misses.py: the per-round record of a policy's plans and the classification of a
missed request's history (real CP-SAT, deterministic clock)."""

from __future__ import annotations

import sys
from pathlib import Path

import tetriopt
from tetriopt.workload import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lp_misses  # noqa: E402


def h(*rounds):
    keys = ("round", "alive", "need", "kept", "ran")
    return [dict(zip(keys, r)) for r in rounds]


def test_classify_names_the_decisive_round():
    assert lp_misses.classify(h((3, False, 5, False, []))) == ("dead on arrival", 3)
    assert lp_misses.classify(h((3, True, 0, False, []), (4, False, 9, False, []))) == ("never kept", 4)
    # kept and run 1 step where it needed 0, then not kept while it could still make it: a drop
    assert lp_misses.classify(h((3, True, 0, True, [(1, 1)]), (4, True, 4, False, []))) == ("dropped", 4)
    assert lp_misses.classify(h((3, True, 2, True, [(4, 1)]), (4, False, 9, False, []))) == ("kept, ran short", 3)


def test_record_sees_every_round_and_the_histories_cover_each_miss():
    inst = tetriopt.parse_instance(generate("flux.1-dev-h100", 8, 40, 208.9, seed=0))
    pol = tetriopt.make_policy("cpsat", time_limit_ms=50, seed=0, workers=1, deterministic=True)
    log = lp_misses.record(pol, {3: ["limit=100"]})
    res = tetriopt.solve(inst, pol)
    rounds = [e for e in log if "reqs" in e]
    assert [e["round"] for e in rounds] == [r.round for r in res.rounds]
    assert [e for e in log if "probe" in e][0]["probe"] == 3
    missed = [o.id for o in res.requests if not o.met]
    assert missed
    for rid in missed:
        hist = lp_misses.history(rid, log)
        assert hist and all(x["rem"] > 0 for x in hist)
        assert lp_misses.classify(hist)[0] in ("dead on arrival", "never kept", "dropped", "kept, ran short",
                                               "late in its last round")
