"""Central differential privacy around a personalized strategy (run-config ``dp.mode = central``).

:class:`CentralPrivacy` is Flower's ``DifferentialPrivacyClientSideFixedClipping``: it takes and
checks the noise multiplier and the clipping norm, writes the clipping norm into every train
message's config for the clients to clip by, and adds Gaussian noise of std ``z C / n``
(Flower's ``compute_stdv``) to the aggregate. It changes three things, each for a reason of
ours (see docs/privacy.md):

- **the round is not skipped when a client fails.** Flower's wrapper drops a round's whole
  aggregate on one error reply, before the inner strategy books the round; ours hands every
  reply to the strategy, which books and leaves out the failed ones, and aggregates the rest by
  :func:`pfl_app.privacy.fixed_cohort_mean`, where a missing update counts as no change;
- **n is the cohort the run really sends**: the number of train messages of the first round
  that sends any (after sampling and scheduling), set on the strategy (``dp_cohort``) too;
- **the noise is seeded** by the run's seed and the round, so that a rerun (and a resume) draws
  the same noise, and each noised round is noted on its rows (``dp_*``), from which
  ``summary.json`` accounts the privacy spent (:func:`pfl_app.privacy.central_epsilon`).

With ``adaptive`` clipping (``dp.clipping = adaptive``, Andrew et al., arXiv 1905.03871) the
clipping norm moves each round toward the ``target_quantile`` of the update norms, from a noised
count of the updates it left unclipped. Flower's ``compute_adaptive_noise_params`` splits the
requested noise multiplier between that count and the model, so that the two together are as
private as the requested z alone. The norm's update is written here: Flower 1.41's adaptive
wrappers count the *clipped* updates (their ``norm_bit`` is set when the scaling is below 1) where
the paper counts the unclipped ones, so their norm moves away from the target (updates of norm 1
with a norm of 0.1 shrink it to 0.022 in 15 rounds; docs/privacy.md).

Flower's own accountant is not used: it accepts only a strategy with FedAvg's
``aggregate_train`` and no sampling amplification.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

import math

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import compute_adaptive_noise_params, compute_stdv

from ..config import RunConfig
from ..privacy import CLIP_ADAPTIVE, CLIP_SERVER, DP_CENTRAL, SAMPLING_NONE, SAMPLING_UNIFORM
from ..records import from_arrayrecord, to_arrayrecord
from .base import PersonalizedFedAvg


class CentralPrivacy(DifferentialPrivacyClientSideFixedClipping):
    """Central DP with fixed clipping around a :class:`~pfl_app.strategies.base.PersonalizedFedAvg`.

    Parameters
    ----------
    strategy : PersonalizedFedAvg
        The strategy to wrap; its ``dp_clipping_norm`` must equal ``clipping_norm`` (it clips
        every decoded update on the server).
    noise_multiplier : float
        z, the noise std over the clipping norm (> 0).
    clipping_norm : float
        C (> 0).
    clip_on_client : bool
        Write the clipping norm into the train config, for the clients to clip before they
        encode (``dp.clipping = client``); otherwise the server's clipping is the only one.
    uniform_sampling : bool
        Whether the clients of a round are a uniform sample (no scheduler picks them): the
        accountant then counts the amplification of sampling a cohort smaller than the
        federation.
    seed : int
        The run's seed; the noise of round r is drawn from ``(seed, r)``.
    adaptive : bool
        Move the clipping norm each round (from ``clipping_norm``) toward ``target_quantile``
        of the update norms (clipping on the client, as ``clip_on_client``).
    target_quantile, clip_learning_rate : float
        Adaptive: the share of updates to leave unclipped, and the geometric step.
    clipped_count_stddev : float or None
        Adaptive: the std of the noise on the count; ``None``: Flower's default, cohort / 20.
    """

    def __init__(self, strategy: PersonalizedFedAvg, noise_multiplier: float, clipping_norm: float, *,
                 clip_on_client: bool = True, uniform_sampling: bool = True, seed: int = 0, adaptive: bool = False,
                 target_quantile: float = 0.5, clip_learning_rate: float = 0.2,
                 clipped_count_stddev: float | None = None) -> None:
        if noise_multiplier <= 0:
            raise ValueError(f"noise_multiplier must be > 0, not {noise_multiplier}")
        if strategy.dp_clipping_norm != clipping_norm:
            raise ValueError(f"the strategy clips updates to {strategy.dp_clipping_norm}, not to the "
                             f"clipping_norm {clipping_norm}: build it with dp_clipping_norm={clipping_norm}")
        # The cohort size is known once the first round's messages are made (configure_train).
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients=1)
        self.inner = strategy
        self.clip_on_client = clip_on_client or adaptive
        self.uniform_sampling = uniform_sampling
        self.seed = seed
        self.adaptive = adaptive
        self.target_quantile = target_quantile
        self.clip_learning_rate = clip_learning_rate
        self.clipped_count_stddev = clipped_count_stddev
        #: The requested z; under adaptive clipping the model's share of it is noise_multiplier.
        self.requested_noise_multiplier = noise_multiplier
        self._cohort = 0
        self._events: dict[int, dict[str, int | str]] = {}

    def __repr__(self) -> str:
        return f"CentralPrivacy(z={self.noise_multiplier}, C={self.clipping_norm}, around {self.inner!r})"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.adaptive:  # this round's norm, for the clients and for the server's own clip
            self.inner.dp_clipping_norm = self.clipping_norm
        if self.clip_on_client:
            messages = list(super().configure_train(server_round, arrays, config, grid))
        else:
            messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if not messages:
            return messages
        if not self._cohort:
            self._cohort = self.num_sampled_clients = self.inner.dp_cohort = len(messages)
            if self.adaptive:
                try:
                    self.clipped_count_stddev, self.noise_multiplier = compute_adaptive_noise_params(
                        self.requested_noise_multiplier, self._cohort, self.clipped_count_stddev)
                except ValueError as err:
                    raise ValueError(f"run-config keys 'dp.noise-multiplier' and 'dp.clipped-count-stddev': "
                                     f"adaptive clipping over a cohort of {self._cohort}: {err}") from None
            log(INFO, "central DP: cohort of %d clients, noise std %.3g (z %g, C %g)", self._cohort,
                compute_stdv(self.noise_multiplier, self.clipping_norm, self._cohort), self.noise_multiplier,
                self.clipping_norm)
        elif len(messages) != self._cohort:
            log(WARNING, "central DP: round %d sends %d train messages, the cohort the noise is calibrated for is "
                "%d; every update still counts 1/%d", server_round, len(messages), self._cohort, self._cohort)
        population = len(list(grid.get_node_ids()))
        sampled = len(messages)
        self._events[server_round] = {
            "dp_sample_size": sampled, "dp_population": max(population, sampled),
            "dp_sampling": SAMPLING_UNIFORM if self.uniform_sampling and sampled < population else SAMPLING_NONE,
        }
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        event = self._events.pop(server_round, None)
        if arrays is None or event is None:
            return arrays, metrics  # nothing released: the global tensors stay as they were
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self._cohort)
        rng = np.random.default_rng([self.seed, server_round, 0xD9])
        noised = {k: (v + rng.normal(0.0, std, v.shape)).astype(np.float32)
                  for k, v in from_arrayrecord(arrays).items()}
        self.inner.note_round(server_round, dp_noise_std=std, dp_clipping_norm=self.clipping_norm, **event)
        log(INFO, "round %d: central DP noise of std %.3g added to the aggregate", server_round, std)
        if self.adaptive:
            self._adapt_clipping_norm(server_round, rng)
        return to_arrayrecord(noised), metrics

    def _adapt_clipping_norm(self, server_round: int, rng: np.random.Generator) -> None:
        """Andrew et al.'s step: ``C <- C exp(-lr (b - target))``, b the noised share of this
        round's updates that the norm left unclipped (each update's ``clipped`` as the strategy
        booked it, by this round's norm)."""
        rows = [r for r in self.inner._ledger_for(server_round).rows() if "clipped" in r]
        if not rows:
            return
        unclipped = sum(not r["clipped"] for r in rows)
        share = (unclipped + rng.normal(0.0, self.clipped_count_stddev or 0.0)) / len(rows)
        self.clipping_norm *= math.exp(-self.clip_learning_rate * (share - self.target_quantile))
        log(INFO, "round %d: adaptive clipping: %d of %d updates unclipped, norm now %.4g", server_round,
            unclipped, len(rows), self.clipping_norm)


def with_privacy(strategy: PersonalizedFedAvg, cfg: RunConfig) -> Strategy:
    """What the ServerApp runs: ``strategy`` wrapped in :class:`CentralPrivacy` under
    ``dp.mode = central``, else ``strategy`` itself (local DP happens on the clients)."""
    if cfg.dp.mode != DP_CENTRAL:
        return strategy
    dp = cfg.dp
    return CentralPrivacy(strategy, dp.noise_multiplier, dp.clipping_norm, clip_on_client=dp.clipping != CLIP_SERVER,
                          uniform_sampling=cfg.schedule.policy == "random", seed=cfg.seed,
                          adaptive=dp.clipping == CLIP_ADAPTIVE, target_quantile=dp.target_quantile,
                          clip_learning_rate=dp.clip_learning_rate,
                          clipped_count_stddev=dp.clipped_count_stddev or None)
