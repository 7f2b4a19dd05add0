"""Over-the-air aggregation (``wireless.aggregation = "aircomp"``), applied to any of our strategies.

:class:`OverTheAir` replaces the aggregation rule, the weighted average of the accepted
updates, by what an analog superposition of them delivers (:mod:`pfl_app.wireless.aircomp`):
Zhu, Wang & Huang's truncated channel inversion under a per-device power budget, with the
fades and path losses the base station knows (:class:`~pfl_app.wireless.csi.BaseStationCSI`)
and the receiver noise over the band. The updates still reach the simulated server in their
Flower messages; the server computes from them what the air would have summed. With
``digital`` (the default) it does nothing: the class's own rule runs.

It is a :class:`~pfl_app.strategies.scheduling.ChannelScheduled` (it needs the client ids
its replies name and the run's link population); :func:`with_aircomp` composes it with a
strategy class as :func:`~pfl_app.strategies.scheduling.with_scheduling` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.logger import log

from ..config import RunConfig
from ..wireless.aircomp import (
    AGGREGATION_AIRCOMP,
    AGGREGATIONS,
    AirCompPlan,
    aircomp_aggregate,
    analog_air_time_s,
    large_scale_gain,
    truncated_inversion,
    uplink_noise_power_w,
)
from ..wireless.csi import BaseStationCSI
from .base import AcceptedUpdate, PersonalizedFedAvg
from .scheduling import ChannelScheduled

# The noise generator's stream, apart from every other draw of the run's seed.
_NOISE_STREAM = 0xA1C0


class OverTheAir(ChannelScheduled):
    """A strategy whose shared tensors may be aggregated over the air.

    Settings (taken by the constructor, read by :meth:`from_run_config`):

    - ``aggregation`` (``wireless.aggregation``): ``digital`` or ``aircomp``;
    - ``aircomp_threshold`` (``wireless.aircomp-threshold``): ``f_th``, the truncation
      threshold on the block fade ``|h|^2 / E|h|^2``;
    - ``aircomp_power_w`` (``wireless.aircomp-power-w``): ``P``, the per-device budget (W).

    Under ``aircomp`` the updates are weighted by :meth:`aggregation_weights` (FedAvg's number
    of examples), renormalised over the clients that transmit. :attr:`noise_power_scale`
    multiplies the receiver noise power (1; tests set 0 for a noiseless channel).
    """

    option_checks = {
        "aggregation": lambda v: None if v in AGGREGATIONS else f"one of {', '.join(AGGREGATIONS)}",
        "aircomp_threshold": lambda v: None if v >= 0 else "a number >= 0 (0: no truncation)",
        "aircomp_power_w": lambda v: None if v > 0 else "a number > 0 (W; inf: no budget)",
    }
    aggregation: str = "digital"
    aircomp_threshold: float = 0.1
    aircomp_power_w: float = 0.2
    noise_power_scale: float = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._round = 0
        self.last_plan: AirCompPlan | None = None  # the last round's power control, for reports and tests

    @classmethod
    def run_config_options(cls, cfg: RunConfig) -> dict[str, Any]:
        w = cfg.wireless
        return {**super().run_config_options(cfg), "aggregation": w.aggregation,
                "aircomp_threshold": w.aircomp_threshold, "aircomp_power_w": w.aircomp_power_w}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self._round = server_round  # the noise's seed
        return super().aggregate_train(server_round, replies)

    def aggregate(
        self, updates: list[AcceptedUpdate], weights: list[float], current: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The class's own rule under ``digital``; under ``aircomp``, the noisy received
        weighted average (:func:`pfl_app.wireless.aircomp.aircomp_aggregate`), each client's
        power control booked in the round's ledger."""
        if self.aggregation != AGGREGATION_AIRCOMP:
            return super().aggregate(updates, weights, current)
        csi = BaseStationCSI(self.link_population)
        num_clients = max(self._num_clients, 1 + max((self._client_of.get(u.node, -1) for u in updates), default=0))
        clients = [self._client_of.get(u.node) for u in updates]
        if any(c is None for c in clients):
            raise ValueError("aircomp needs every update's client id (its reply's client record) to know its channel")
        profiles = [csi.profile(c, num_clients) for c in clients]
        fades = [csi.state(c, num_clients, self._round).fading_power for c in clients]
        # The band is shared: its noise is the worst receiver noise among the profiles.
        noise = max(uplink_noise_power_w(p) for p in profiles) * self.noise_power_scale
        plan = truncated_inversion([large_scale_gain(p) for p in profiles], fades, self.aircomp_power_w,
                                   self.aircomp_threshold, noise)
        self.last_plan = plan
        n = sum(int(np.asarray(v).size) for v in current.values())
        ledger = self._ledger_for(self._round)
        for u, p, transmitting, power, amp in zip(updates, profiles, plan.transmitting, plan.power_w,
                                                  plan.amplitude, strict=True):
            air = analog_air_time_s(n, p.bandwidth_up_hz)
            ledger.note(u.node, aircomp_truncated=0.0 if transmitting else 1.0, aircomp_power_w=power,
                        aircomp_amplitude=amp, air_time_s_up=air if transmitting else 0.0,
                        energy_j_up=power * air)
        log(INFO, "round %d: aircomp, %d of %d client(s) transmit (eta %.3g W, noise %.3g W)", self._round,
            sum(plan.transmitting), len(updates), plan.eta, plan.noise_power_w)
        rng = np.random.default_rng([self.link_population.seed, self._round, _NOISE_STREAM])
        return aircomp_aggregate([u.tensors for u in updates], weights, current, plan, rng)


def with_aircomp(strategy_cls: type[PersonalizedFedAvg]) -> type[PersonalizedFedAvg]:
    """``strategy_cls`` with the ``wireless.aggregation`` setting: a subclass of
    :class:`OverTheAir` and it (``strategy_cls`` itself if it already is one)."""
    if issubclass(strategy_cls, OverTheAir):
        return strategy_cls
    return type(f"{strategy_cls.__name__}OverTheAir", (OverTheAir, strategy_cls), {})
