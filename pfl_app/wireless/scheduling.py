"""Client scheduling policies: which of the sampled clients transmit in a round.

A policy is a function ``policy(situation) -> node ids`` that picks at most
``situation.k`` of ``situation.candidates`` (every sampled node, with what the base station
knows of it: its channel state this round, its exponentially averaged past rate, the round
it was last scheduled, its estimated round time). It is registered once, where it is
defined, with ``@register_policy(name)``; the run config's ``schedule.policy`` names a
registered policy or a function of one's own by ``package.module:function``. A policy that
needs the round deadline is marked ``@requires_deadline``: the run config refuses it without
``wireless.deadline-s`` > 0.

**Unknown channel state.** The server learns which client a node is from its first reply;
before that the node's channel state is unknown (``Candidate.known`` is false). The
channel-aware policies here schedule such nodes first (exploration, in a seeded random order),
so that every node is known after the round it first answers; ``age-aware`` needs no rule
for it (a node never scheduled is the oldest).

Ties between known candidates are broken by client id, so that a choice depends on the
channel and the seed, not on the node ids Flower happens to assign.

:func:`jain_index` measures how evenly a run scheduled its clients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .registry import Model, registrar, resolve

#: Every registered policy, by name, in the order they were registered.
POLICIES: dict[str, Model] = {}

#: ``@register_policy(name)``: add a scheduling policy to :data:`POLICIES`.
register_policy = registrar(POLICIES, "scheduling policy")

#: The attribute :func:`requires_deadline` sets on a policy.
REQUIRES_DEADLINE = "requires_deadline"


def requires_deadline(policy: Model) -> Model:
    """Mark ``policy`` as one that reads ``situation.deadline_s`` (which must then be > 0)."""
    setattr(policy, REQUIRES_DEADLINE, True)
    return policy


def scheduling_policy(name: str) -> Model:
    """The policy ``name`` stands for (registered, or a ``package.module:function`` path).

    Raises
    ------
    ValueError
        Naming the allowed policies.
    """
    return resolve(POLICIES, name, "scheduling policy")


def policy_names() -> tuple[str, ...]:
    """The registered policies' names (the run config's choices for ``schedule.policy``)."""
    return tuple(POLICIES)


def policy_problem(name: str) -> str | None:
    """Why ``name`` leads to no scheduling policy, or ``None``."""
    try:
        scheduling_policy(name)
    except ValueError as err:
        return str(err)
    return None


def policy_requires_deadline(name: str) -> bool:
    """Whether the policy ``name`` needs a round deadline (see :func:`requires_deadline`)."""
    return bool(getattr(scheduling_policy(name), REQUIRES_DEADLINE, False))


def policies_without_deadline() -> str:
    """The registered policies that run without a deadline, for messages."""
    return ", ".join(n for n in POLICIES if not getattr(POLICIES[n], REQUIRES_DEADLINE, False))


@dataclass(frozen=True)
class Candidate:
    """A sampled node, as the scheduler sees it in one round.

    Attributes
    ----------
    node_id : int
        Flower's node id.
    client_id : int or None
        The client the node answered as; ``None`` until its first reply.
    snr_db : float or None
        Its instantaneous uplink SNR this round (perfect CSI, :mod:`pfl_app.wireless.csi`);
        ``None`` when the client is not known yet.
    rate_bps : float or None
        Its instantaneous uplink rate this round; ``None`` when unknown.
    average_rate_bps : float
        Its exponentially averaged past rate (proportional fair's ``T``; 0 before it is
        first scheduled).
    last_scheduled : int
        The last round it was scheduled in; 0: never.
    round_time_s : float or None
        Its estimated round time (downlink + compute + uplink, every packet through at the
        first attempt); ``None`` when unknown or when the run has no deadline.
    """

    node_id: int
    client_id: int | None = None
    snr_db: float | None = None
    rate_bps: float | None = None
    average_rate_bps: float = 0.0
    last_scheduled: int = 0
    round_time_s: float | None = None

    @property
    def known(self) -> bool:
        """Whether the base station knows this node's channel."""
        return self.client_id is not None and self.snr_db is not None


@dataclass(frozen=True)
class Situation:
    """What a policy decides on.

    Attributes
    ----------
    server_round : int
        The round, from 1.
    candidates : tuple of Candidate
        The nodes Flower sampled (after any ``schedule`` of the strategy's own), by node id.
    clients_per_round : int
        ``K``, how many to schedule; 0: all of them (a policy may still leave some out:
        ``deadline``).
    deadline_s : float
        The round deadline (``wireless.deadline-s``); 0: none.
    seed : int
        Seeds :meth:`rng`.
    """

    server_round: int
    candidates: tuple[Candidate, ...]
    clients_per_round: int = 0
    deadline_s: float = 0.0
    seed: int = 0

    @property
    def k(self) -> int:
        """How many to schedule: ``clients_per_round``, at most all candidates (0: all)."""
        n = len(self.candidates)
        return n if self.clients_per_round <= 0 else min(self.clients_per_round, n)

    def rng(self) -> np.random.Generator:
        """The round's generator for random choices, from the seed and the round only."""
        return np.random.default_rng([int(self.seed), int(self.server_round), 0x5C4ED])


def _by_client(c: Candidate) -> tuple[int, int]:
    return (c.client_id if c.client_id is not None else 1 << 62, c.node_id)


def _shuffled(situation: Situation, candidates: Iterable[Candidate]) -> list[Candidate]:
    ordered = sorted(candidates, key=lambda c: c.node_id)
    return [ordered[i] for i in situation.rng().permutation(len(ordered))]


def ranked(situation: Situation, score: Callable[[Candidate], object]) -> list[Candidate]:
    """The candidates best first: those with unknown channel state first (in a seeded random
    order), then the known ones by ``score`` (highest first), ties by client id.

    The helper the built-in channel-aware policies share; a policy of one's own may use it.
    """
    unknown = _shuffled(situation, (c for c in situation.candidates if not c.known))
    known = [c for c in situation.candidates if c.known]
    known.sort(key=_by_client)
    known.sort(key=score, reverse=True)  # stable: equal scores keep the client order
    return unknown + known


# -- The built-in policies, in the order their names are listed ------------------------


@register_policy("random")
def random_policy(situation: Situation) -> list[int]:
    """``K`` of the sampled nodes uniformly at random; all of them when ``K`` is 0.

    FedAvg's client selection (McMahan et al., "Communication-efficient learning of deep
    networks from decentralized data", AISTATS 2017): the channel plays no part. With ``K``
    = 0 it keeps Flower's sampling as it is, drawing nothing.
    """
    if situation.k >= len(situation.candidates):
        return [c.node_id for c in situation.candidates]
    return [c.node_id for c in _shuffled(situation, situation.candidates)[: situation.k]]


@register_policy("best-snr")
def best_snr(situation: Situation) -> list[int]:
    """The ``K`` nodes with the best instantaneous uplink SNR this round.

    Opportunistic (max-SNR, "greedy") scheduling, which maximises the sum rate by riding the
    fading peaks: Knopp & Humblet, "Information capacity and power control in single-cell
    multiuser communications", IEEE ICC 1995. It starves the clients of poor links (see
    ``proportional-fair`` and ``age-aware``). Nodes of unknown channel first.
    """
    return [c.node_id for c in ranked(situation, lambda c: c.snr_db)[: situation.k]]


@register_policy("proportional-fair")
def proportional_fair(situation: Situation) -> list[int]:
    """The ``K`` nodes with the largest ``R_i(t) / T_i(t)``: instantaneous rate over the
    exponentially averaged rate it was served in the past.

    Viswanath, Tse & Laroia, "Opportunistic beamforming using dumb antennas", IEEE Trans.
    Inf. Theory 48(6), 2002 (after Kelly's proportional fairness, 1997): each node is
    scheduled near its own fading peaks, so the sum rate gains from the fading while every
    node keeps a share. ``T_i`` is updated by the strategy after each round,
    ``T_i <- (1 - 1/t_c) T_i + (1/t_c) R_i 1[i scheduled]`` with ``t_c`` =
    ``schedule.pf-window``; a node never served has ``T_i = 0`` and comes first, larger
    rates first among those. Nodes of unknown channel first.
    """
    def metric(c: Candidate) -> tuple[float, float]:
        ratio = c.rate_bps / c.average_rate_bps if c.average_rate_bps > 0 else math.inf
        return (ratio, c.rate_bps)

    return [c.node_id for c in ranked(situation, metric)[: situation.k]]


@register_policy("age-aware")
def age_aware(situation: Situation) -> list[int]:
    """The ``K`` nodes longest since they were last scheduled (age ``t - last``; a node never
    scheduled has age ``t``), the better uplink SNR first among equal ages.

    Age-based scheduling: Yang, Arafa, Quek & Poor, "Age-based scheduling policy for
    federated learning in mobile edge networks", IEEE ICASSP 2020, which schedules by the
    age of each client's update so that stale clients are heard. Among equal ages a node of
    unknown channel comes first (it is explored), then the better channel.
    """
    explore = {c.node_id: i for i, c in enumerate(_shuffled(situation, (c for c in situation.candidates
                                                                       if not c.known)))}

    def key(c: Candidate) -> tuple:
        # Oldest first (smallest last round); among equals the unknown, then the best channel.
        if not c.known:
            return (c.last_scheduled, 0, explore[c.node_id], 0.0, 0, 0)
        return (c.last_scheduled, 1, 0, -c.snr_db, *_by_client(c))

    return [c.node_id for c in sorted(situation.candidates, key=key)[: situation.k]]


@register_policy("deadline")
@requires_deadline
def deadline(situation: Situation) -> list[int]:
    """Only nodes whose estimated round time (downlink + compute + uplink) fits the round
    deadline, fastest first, at most ``K`` of them.

    FedCS: Nishio & Yonetani, "Client selection for federated learning with heterogeneous
    resources in mobile edge", IEEE ICC 2019, which admits the clients whose update arrives
    within the round deadline, greedily, the quickest first. The time is estimated with every
    packet through at the first attempt (:func:`pfl_app.wireless.csi.air_time_s`), a lower
    bound: a node left out would have missed the deadline anyway. Nodes of unknown channel
    are scheduled first (explored); if none fits, nobody transmits this round.

    Raises
    ------
    ValueError
        When the situation has no deadline (``deadline_s`` <= 0).
    """
    if not situation.deadline_s > 0:
        raise ValueError("the 'deadline' scheduling policy needs a round deadline: run-config key "
                         f"'wireless.deadline-s' > 0 (got {situation.deadline_s:g})")
    order = ranked(situation, lambda c: -c.round_time_s if c.round_time_s is not None else -math.inf)
    fits = [c for c in order if not c.known or (c.round_time_s is not None
                                                 and c.round_time_s <= situation.deadline_s)]
    return [c.node_id for c in fits[: situation.k]]


# -- Fairness -----------------------------------------------------------------------------


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n sum x^2)`` of non-negative allocations.

    Jain, Chiu & Hawe, "A quantitative measure of fairness and discrimination for resource
    allocation in shared computer systems", DEC TR-301, 1984. It is 1 when all are equal and
    ``1/n`` when one gets everything. All zero (nobody got anything) counts as equal: 1.

    Raises
    ------
    ValueError
        When ``values`` is empty, or holds a negative or non-finite number.
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("jain_index needs at least one value")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"jain_index needs finite values >= 0, got {x.tolist()}")
    squares = float(np.dot(x, x))
    if squares == 0.0:
        return 1.0
    return float(x.sum() ** 2 / (x.size * squares))


__all__ = [
    "POLICIES", "REQUIRES_DEADLINE", "Candidate", "Situation", "age_aware", "best_snr", "deadline",
    "jain_index", "policies_without_deadline", "policy_names", "policy_problem", "policy_requires_deadline",
    "proportional_fair", "random_policy", "ranked", "register_policy", "requires_deadline", "scheduling_policy",
]
