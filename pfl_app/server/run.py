"""What the ServerApp does: validate, build the strategy, run the rounds, write results."""

from __future__ import annotations

from logging import ERROR, INFO

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid

from ..config import RunConfig, parse_run_config
from ..data import load_source
from ..models.personalized import shared_model_bundle
from ..records import from_arrayrecord, to_arrayrecord
from ..results import RunRecorder, resolve_run_dir
from ..strategies import STRATEGIES
from ..strategies.base import TooFewClients
from ..strategies.server_optimizers import build_strategy
from ..tasks import task_of


def check_data_sources(cfg: RunConfig) -> None:
    """Load every dataset of ``data.tasks`` once, so that a missing file or a wrong column
    name fails the run here, before any client trains."""
    for name in cfg.data.tasks:
        try:
            task_of(name, load_source(
                name,
                text_column=cfg.data.text_column,
                label_column=cfg.data.label_column,
                prompt_column=cfg.data.prompt_column,
                completion_column=cfg.data.completion_column,
            ))
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            raise ValueError(f"run-config key 'data.tasks': dataset {name!r} cannot be used: {err}") from err


def run_server(grid: Grid, context: Context) -> dict:
    """Run a federated job from ``context.run_config`` and return its summary.

    The config is validated before anything else, so a bad value fails the run at once
    with a message naming the key and its allowed values.
    """
    cfg = parse_run_config(context.run_config)
    check_data_sources(cfg)
    run_dir = resolve_run_dir(cfg)
    recorder = RunRecorder(run_dir, cfg)
    log(INFO, "pfl-app: method=%s model=%s results in %s", cfg.method, cfg.model.name, run_dir)

    strategy = build_strategy(
        cfg.method,
        STRATEGIES,
        optimizer=cfg.server_optimizer,
        learning_rate=cfg.server_learning_rate,
        proximal_mu=cfg.proximal_mu,
        on_round_end=recorder.round_done,
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_clients,
        min_evaluate_nodes=cfg.min_clients,
        min_available_nodes=cfg.min_clients,
    )
    # The server holds only the shared tensors; it needs the model to know their initial
    # values, which every client builds identically from the same seed.
    bundle = shared_model_bundle(cfg)
    initial = to_arrayrecord(bundle.initial_tensors(strategy.shared_groups))
    log(INFO, "pfl-app: %d shared tensors, %d bytes per copy", len(initial), initial.count_bytes())
    message_config = ConfigRecord({"run-dir": str(run_dir)})
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=cfg.num_server_rounds,
            timeout=cfg.round_timeout_s,
            train_config=message_config,
            evaluate_config=ConfigRecord(dict(message_config)),
        )
    except TooFewClients as err:
        # Keep what the finished rounds produced, say why the run stopped, then fail it.
        log(ERROR, "pfl-app: %s", err)
        recorder.finish({}, stopped=str(err))
        raise
    summary = recorder.finish(from_arrayrecord(result.arrays) if result.arrays is not None else {})
    log(INFO, "pfl-app: summary written to %s", run_dir / "summary.json")
    return summary
