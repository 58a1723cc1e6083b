"""lookahead: what a request can still do before its deadline, counting whole rounds."""

from __future__ import annotations

import tetriopt
from tetriopt import RequestState, RoundState
from tetriopt.lookahead import outlook, steps_possible, useful_degrees

PROF = tetriopt.load_profile("flux.1-dev-h100")  # 1024 px: 153.6 / 92.9 / 58.2 / 69.7 ms at 1/2/4/8 GPUs
R = 900_000


def state(*reqs, now=0):
    return RoundState(now_us=now, round_us=R, cluster=tetriopt.make_cluster(8), profile=PROF, degrees=(1, 2, 4, 8),
                      requests=reqs)


def test_steps_possible_counts_whole_rounds_not_time():
    s = state()
    # 1.9 rounds at 100 ms a step: one full round (9 steps) plus 810 ms of the next (8), not 17.1
    assert steps_possible(s, 100_000, 0, 1_710_000) == 17
    assert steps_possible(s, 100_000, 0, 99_999) == 0
    # a step that does not divide the round: 5 per round at 153.6 ms, the rest of each round idles
    assert steps_possible(s, 153_600, 0, 2 * R) == 10


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
    assert o.slack_steps == steps_possible(state(tight), 58_200, R, 3_000_000)
    # 1000 ms: even 4 GPUs do 15 + 1 steps: lost; the cheapest degree is then reported for its cost
    lost = RequestState("a", 1024, 1024, remaining_steps=20, deadline_us=1_000_000 + decode)
    o = outlook(state(lost), lost)
    assert not o.alive and o.cheapest_degree == 1
