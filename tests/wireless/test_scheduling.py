"""Scheduling policies on hand-built situations, the policy registry, and Jain's index."""

import math
import textwrap

import pytest

from pfl_app.wireless.scheduling import (
    POLICIES,
    Candidate,
    Situation,
    jain_index,
    policy_requires_deadline,
    ranked,
    register_policy,
    scheduling_policy,
)


def _situation(candidates, k=2, deadline_s=0.0, server_round=5, seed=0):
    return Situation(server_round, tuple(candidates), k, deadline_s, seed)


# Four known nodes; node ids are deliberately not in client order.
KNOWN = (
    #         node client  SNR dB  rate     avg rate  last  round time
    Candidate(40, 0, snr_db=3.0, rate_bps=1e6, average_rate_bps=2e6, last_scheduled=4, round_time_s=2.0),
    Candidate(30, 1, snr_db=12.0, rate_bps=4e6, average_rate_bps=4e6, last_scheduled=1, round_time_s=9.0),
    Candidate(20, 2, snr_db=7.0, rate_bps=2e6, average_rate_bps=0.5e6, last_scheduled=3, round_time_s=1.0),
    Candidate(10, 3, snr_db=9.0, rate_bps=3e6, average_rate_bps=1e6, last_scheduled=2, round_time_s=4.5),
)


def test_the_built_in_policies_are_registered_in_order():
    assert list(POLICIES)[:5] == ["random", "best-snr", "proportional-fair", "age-aware", "deadline"]
    assert [policy_requires_deadline(n) for n in list(POLICIES)[:5]] == [False, False, False, False, True]


def test_best_snr_takes_the_k_best_channels():
    assert scheduling_policy("best-snr")(_situation(KNOWN, k=2)) == [30, 10]  # 12 dB, 9 dB
    assert scheduling_policy("best-snr")(_situation(KNOWN, k=3)) == [30, 10, 20]


def test_proportional_fair_takes_the_best_rate_relative_to_its_past():
    # R/T: node 40 0.5, node 30 1.0, node 20 4.0, node 10 3.0: the 12 dB node loses to two worse ones.
    assert scheduling_policy("proportional-fair")(_situation(KNOWN, k=2)) == [20, 10]
    # A node never served (T = 0) comes first, whatever its rate.
    starved = KNOWN[:3] + (Candidate(10, 3, snr_db=-5.0, rate_bps=1e5, average_rate_bps=0.0),)
    assert scheduling_policy("proportional-fair")(_situation(starved, k=1)) == [10]


def test_age_aware_takes_the_longest_unscheduled():
    # Last scheduled in rounds 4, 1, 3, 2: the oldest are node 30 (round 1) and node 10 (round 2).
    assert scheduling_policy("age-aware")(_situation(KNOWN, k=2)) == [30, 10]
    # Equal ages: the better channel first.
    tied = [Candidate(1, 0, snr_db=1.0, rate_bps=1.0, last_scheduled=2),
            Candidate(2, 1, snr_db=5.0, rate_bps=1.0, last_scheduled=2),
            Candidate(3, 2, snr_db=9.0, rate_bps=1.0, last_scheduled=4)]
    assert scheduling_policy("age-aware")(_situation(tied, k=1)) == [2]


def test_deadline_admits_only_what_fits_fastest_first():
    # Round times 2.0, 9.0, 1.0, 4.5 s against a 5 s deadline: 9 s is left out even with room for it.
    assert scheduling_policy("deadline")(_situation(KNOWN, k=0, deadline_s=5.0)) == [20, 40, 10]
    assert scheduling_policy("deadline")(_situation(KNOWN, k=2, deadline_s=5.0)) == [20, 40]
    assert scheduling_policy("deadline")(_situation(KNOWN, k=2, deadline_s=0.5)) == []
    with pytest.raises(ValueError, match="'wireless.deadline-s' > 0"):
        scheduling_policy("deadline")(_situation(KNOWN, k=2, deadline_s=0.0))


def test_random_keeps_everyone_with_k_zero_and_draws_k_by_the_seed():
    assert sorted(scheduling_policy("random")(_situation(KNOWN, k=0))) == [10, 20, 30, 40]
    draws = {tuple(scheduling_policy("random")(_situation(KNOWN, k=2, server_round=r))) for r in range(1, 30)}
    assert all(len(d) == 2 and set(d) <= {10, 20, 30, 40} for d in draws)
    assert len(draws) > 3  # it does vary with the round
    assert scheduling_policy("random")(_situation(KNOWN, k=2, server_round=7)) == \
        scheduling_policy("random")(_situation(KNOWN, k=2, server_round=7))


@pytest.mark.parametrize("name", ["best-snr", "proportional-fair", "age-aware", "deadline"])
def test_a_node_of_unknown_channel_is_explored_first(name):
    unknown = Candidate(99)
    chosen = scheduling_policy(name)(_situation((*KNOWN, unknown), k=2, deadline_s=5.0))
    assert chosen[0] == 99 and len(chosen) == 2


def test_k_larger_than_the_candidates_takes_them_all():
    assert sorted(scheduling_policy("best-snr")(_situation(KNOWN, k=10))) == [10, 20, 30, 40]


def test_ties_are_broken_by_client_id_not_node_id():
    same = [Candidate(9, 2, snr_db=5.0, rate_bps=1.0), Candidate(8, 0, snr_db=5.0, rate_bps=1.0),
            Candidate(7, 1, snr_db=5.0, rate_bps=1.0)]
    assert [c.client_id for c in ranked(_situation(same), lambda c: c.snr_db)] == [0, 1, 2]


def test_a_policy_of_ones_own_by_path(tmp_path, monkeypatch):
    (tmp_path / "my_policies.py").write_text(textwrap.dedent("""
        def lowest_node(situation):
            return sorted(c.node_id for c in situation.candidates)[: situation.k]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert scheduling_policy("my_policies:lowest_node")(_situation(KNOWN, k=2)) == [10, 20]
    with pytest.raises(ValueError, match="scheduling policy must be one of random, best-snr"):
        scheduling_policy("nope")


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_policy("best-snr")(lambda situation: [])


@pytest.mark.parametrize("values, expected", [
    ([3, 3, 3, 3], 1.0),          # equal shares
    ([5, 0, 0, 0], 1 / 4),        # one client only: 1/n
    ([2, 0], 1 / 2),
    ([1, 2, 3], 36 / (3 * 14)),   # (1+2+3)^2 / (3 (1+4+9))
    ([0, 0, 0], 1.0),             # nothing for anyone counts as equal
])
def test_jain_index_closed_form(values, expected):
    assert jain_index(values) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [[], [1, -1], [1, math.nan]])
def test_jain_index_refuses_what_is_not_an_allocation(bad):
    with pytest.raises(ValueError, match="jain_index"):
        jain_index(bad)
