"""lookahead: what a request can still do before its deadline, counting whole rounds."""

from __future__ import annotations

import tetriopt
from tetriopt import RequestState, RoundState
import random

import pytest

from tetriopt.lookahead import earliest_finish_us, outlook, steps_possible, steps_within, useful_degrees
from tetriopt.server.admission import Reach

PROF = tetriopt.load_profile("flux.1-dev-h100")  # 1024 px: 153.6 / 92.9 / 58.2 / 69.7 ms at 1/2/4/8 GPUs
R = 900_000


def state(*reqs, now=0):
    return RoundState(now_us=now, round_us=R, cluster=tetriopt.make_cluster(8), profile=PROF, degrees=(1, 2, 4, 8),
                      requests=reqs)


def test_steps_possible_counts_whole_rounds_not_time():
    # 1.9 rounds at 100 ms a step: one full round (9 steps) plus 810 ms of the next (8), not 17.1
    assert steps_within(R, 100_000, 0, 1_710_000) == 17
    assert steps_within(R, 100_000, 0, 99_999) == 0
    # a step that does not divide the round: 5 per round at 153.6 ms, the rest of each round idles
    assert steps_within(R, 153_600, 0, 2 * R) == 10


def test_useful_degrees_drop_slower_wider_sets_and_steps_longer_than_a_round():
    r = RequestState("a", 1024, 1024, remaining_steps=20, deadline_us=10**7)
    assert useful_degrees(state(r), r) == {1: 153_600, 2: 92_900, 4: 58_200}  # 8 GPUs are slower than 4
    small = RequestState("s", 256, 256, remaining_steps=20, deadline_us=10**7)
    assert useful_degrees(state(small), small) == {1: 40_000}  # more GPUs only cost more per step
    big = RequestState("b", 2048, 2048, remaining_steps=20, deadline_us=10**7)
    short = RoundState(now_us=0, round_us=300_000, cluster=tetriopt.make_cluster(8), profile=PROF,
                       degrees=(1, 2, 4, 8), requests=(big,))
    assert set(useful_degrees(short, big)) == {4, 8}  # 863 and 461 ms steps do not fit a 300 ms round


def test_outlook_picks_the_cheapest_degree_that_still_meets_the_deadline():
    decode = PROF.vae_decode_us(1024, 1024)
    # 20 steps at 1 GPU: 5 a round, so 3 rounds + 5 x 153.6 ms = 3468 ms; give 3500 ms: degree 1 suffices
    loose = RequestState("a", 1024, 1024, remaining_steps=20, deadline_us=3_500_000 + decode)
    o = outlook(state(loose), loose)
    assert (o.cheapest_degree, o.cheapest_cost, o.fastest, o.alive) == (1, 153_600, 4, True)
    # 3000 ms: 1 GPU manages 16 steps; 2 GPUs (9 a round) make it
    tight = RequestState("a", 1024, 1024, remaining_steps=20, deadline_us=3_000_000 + decode)
    o = outlook(state(tight), tight)
    assert (o.cheapest_degree, o.cheapest_cost, o.alive) == (2, 2 * 92_900, True)
    # slack: steps at the fastest degree (15 a round) that fit after this round, before the due time
    assert o.slack_steps == steps_possible(state(tight), tight, 58_200, R, started=True) == 15 + 15 + 5
    # 1000 ms: even 4 GPUs do 15 + 1 steps: lost; the cheapest degree is then reported for its cost
    lost = RequestState("a", 1024, 1024, remaining_steps=20, deadline_us=1_000_000 + decode)
    o = outlook(state(lost), lost)
    assert not o.alive and o.cheapest_degree == 1


def test_the_finishing_round_holds_the_decode_and_the_first_the_encode():
    # 2048 px on 8 GPUs: 143.9 ms a step, 393.6 ms of decode. 6 steps, deadline 1.3 s: the old count
    # (deadline less the decode: 906.4 ms, 6 steps in its first round) kept it alive; but 6 steps and
    # the decode take 1257 ms, more than a round, and the next round has 400 ms: one step (143.9)
    # plus the decode (393.6) do not fit there. At most 3 steps can still finish by then.
    big = RequestState("b", 2048, 2048, remaining_steps=6, deadline_us=1_300_000, location=tuple(range(8)))
    o = outlook(state(big), big)
    assert not o.alive and steps_possible(state(big), big, 143_900, 0) == 3
    # on one GPU (863.4 ms a step) the decode never fits after a step: the last round goes wide
    far = RequestState("b", 2048, 2048, remaining_steps=20, deadline_us=60_000_000, location=(0,))
    assert steps_within(R, 863_400, 0, far.deadline_us, 0, 393_600) == 0
    assert outlook(state(far), far).cheapest_degree == 1
    # with 4 steps left it is dead too; with 3 it finishes in this round (3 x 143.9 + 393.6 <= 900)
    assert outlook(state(b3 := RequestState("b", 2048, 2048, 3, 1_300_000, location=tuple(range(8)))), b3).alive
    # 256 px, 22 steps of 40 ms and a 5.3 ms decode: 885.3 ms, a round's worth once started; the
    # prompt's 20 ms text encode on top of it does not fit: a request not started needs a second round
    fresh = RequestState("s", 256, 256, remaining_steps=22, deadline_us=R)
    assert not outlook(state(fresh), fresh).alive
    assert outlook(state(on := RequestState("s", 256, 256, 22, R, location=(0,))), on).alive
    # one not started that could wait a round if it had its latent, but whose encode cannot wait
    # (21 steps + encode + decode in the next round: 905.3 ms > 900) must run now
    later = RequestState("s", 256, 256, remaining_steps=22, deadline_us=2 * R)
    o = outlook(state(later), later)
    assert o.alive and o.slack_steps == 22 and o.need_now == 1


def _brute_steps(R, t, start, D, enc, dec, tf):
    """Most steps that finish by D: try every finishing round (its steps of tf), earlier rounds full."""
    best = 0
    for j in range((D - start) // R + 1):
        final = (min(R, D - start - j * R) - dec - (enc if j == 0 else 0)) // tf
        if final >= 1:
            before = 0 if j == 0 else (R - enc) // t + (j - 1) * (R // t)
            best = max(best, before + final)
    return best


def test_steps_within_and_earliest_finish_agree_with_brute_force():
    rng = random.Random(7)
    for _ in range(3000):
        R = rng.choice([300_000, 900_000, 1_850_000])
        t = rng.randint(R // 40, R)
        enc, dec = rng.choice([0, 20_000]), rng.randint(0, R // 2)
        start, D = rng.choice([0, R]), rng.randint(0, 6 * R)
        n = steps_within(R, t, start, D, enc, dec)
        assert n == _brute_steps(R, t, start, D, enc, dec, t)
        tf = rng.randint(R // 50, t)
        assert steps_within(R, t, start, D, enc, dec, tf) == _brute_steps(R, t, start, D, enc, dec, tf)
        for steps in (n, n + 1):
            fin = earliest_finish_us(R, t, start, steps, enc, dec)
            assert (steps >= 1 and fin is not None and fin <= D) == (1 <= steps <= n), (R, t, enc, dec, start, D, steps)


@pytest.mark.parametrize("size", [256, 512, 1024, 2048])
def test_admission_reach_is_the_planners_alive(size):
    reach = Reach(PROF, tetriopt.make_cluster(8), (1, 2, 4, 8), R)
    rng = random.Random(size)
    for _ in range(200):
        loc = rng.choice([(), (0,)])
        r = RequestState("a", size, size, remaining_steps=rng.randint(1, 50),
                         deadline_us=rng.randint(100_000, 8 * R), location=loc)
        assert reach.alive(r, 0) == outlook(state(r), r).alive, r
