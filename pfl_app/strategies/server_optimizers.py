"""Flower's own server optimizers, applied to any of our strategies.

FedProx, FedAdam, FedYogi, FedAdagrad and FedAvgM are Flower's strategies, not rewritten:
each personalized strategy is combined with one by multiple inheritance, Flower's class
first. Their ``aggregate_train`` calls ``super().aggregate_train``, which then resolves to
our aggregation of the shared tensors (with its update checks and lost-update handling, and
the strategy's ``aggregate`` rule), and they apply their server step to its result. FedProx adds ``proximal-mu`` to the train
config, which our clients turn into a proximal term (:mod:`pfl_app.training`).
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedProx, FedYogi

from ..config import RunConfig
from .base import PersonalizedFedAvg
from .aircomp import with_aircomp
from .scheduling import with_scheduling

SERVER_OPTIMIZERS: dict[str, type | None] = {
    "fedavg": None,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedavgm": FedAvgM,
}


def with_server_optimizer(strategy_cls: type[PersonalizedFedAvg], optimizer: str) -> type[PersonalizedFedAvg]:
    """``strategy_cls`` itself for ``fedavg``, else a subclass of Flower's optimizer and it."""
    if optimizer not in SERVER_OPTIMIZERS:
        raise ValueError(f"server optimizer {optimizer!r} is not one of {', '.join(SERVER_OPTIMIZERS)}")
    flower_cls = SERVER_OPTIMIZERS[optimizer]
    if flower_cls is None:
        return strategy_cls
    own = ("method", "on_round_end", *strategy_cls.option_names())

    def __init__(self, **kwargs: Any) -> None:
        # Flower's optimizers pass only FedAvg's arguments on to the classes after them: ours
        # are taken apart here and set (and checked) once Flower's constructor is done.
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        flower_cls.__init__(self, **kwargs)
        if "method" in ours:
            self.method = ours.pop("method")
        if "on_round_end" in ours:
            self.on_round_end = ours.pop("on_round_end")
        self.set_options(**ours)

    return type(f"{strategy_cls.__name__}{flower_cls.__name__}", (flower_cls, strategy_cls), {"__init__": __init__})


def optimizer_kwargs(optimizer: str, learning_rate: float, proximal_mu: float) -> dict[str, Any]:
    """The constructor arguments of Flower's optimizer for our two knobs."""
    if optimizer in ("fedadam", "fedyogi", "fedadagrad"):
        return {"eta": learning_rate}
    if optimizer == "fedavgm":
        return {"server_learning_rate": learning_rate}
    if optimizer == "fedprox":
        return {"proximal_mu": proximal_mu}
    return {}


def build_strategy(
    method: str, strategies: dict[str, type[PersonalizedFedAvg]], optimizer: str = "fedavg",
    learning_rate: float = 1.0, proximal_mu: float = 0.0, on_round_end=None, run_config: RunConfig | None = None,
    **fedavg_kwargs: Any,
) -> PersonalizedFedAvg:
    """Instantiate ``strategies[method]``, scheduled by a policy (:func:`with_scheduling`), with
    the server optimizer ``optimizer``, and with its own settings from ``run_config`` when given
    (:meth:`PersonalizedFedAvg.from_run_config`; the scheduling policy is ``schedule.policy``), its
    aggregation over the air when ``wireless.aggregation`` says so (:func:`with_aircomp`)."""
    cls = with_server_optimizer(with_aircomp(with_scheduling(strategies[method])), optimizer)
    kwargs = {**fedavg_kwargs, **optimizer_kwargs(optimizer, learning_rate, proximal_mu),
              "method": method, "on_round_end": on_round_end}
    return cls.from_run_config(run_config, **kwargs) if run_config is not None else cls(**kwargs)
