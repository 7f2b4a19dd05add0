"""Client-side logic: data, state, and the train/evaluate handlers of every method."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message

from .context import run_config

Handler = Callable[[Message, Context], Message]


def handlers(context: Context) -> tuple[Handler, Handler]:
    """``(train, evaluate)`` for the run's method: task tuning (PFTT and its baselines) or
    RLHF (PFIT and its baselines). Imported lazily: a task-tuning client never loads trl's
    RL trainer.

    Raises ``ValueError`` when this client's hardware cannot run ``train.precision`` (a
    deployed client's check of it, before it trains; a simulation's launcher checked it
    before the start): the server logs the message as the node's failure."""
    cfg = run_config(context)
    from ..precision import precision_problem

    if (problem := precision_problem(cfg.train.precision)) is not None:
        raise ValueError(problem)
    if cfg.method_spec.uses_reward_models:
        from .rlhf_tuning import handle_evaluate, handle_train
    else:
        from .task_tuning import handle_evaluate, handle_train
    return handle_train, handle_evaluate
