"""What the ServerApp does: validate, build the strategy, run the rounds, write results."""

from __future__ import annotations

import json
from logging import ERROR, INFO, WARNING
from pathlib import Path

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid

from ..checkpoint import Checkpoint, restore_random, restore_strategy_state, strategy_state
from ..checkpoint import read as read_checkpoint
from ..config import RunConfig, parse_run_config, resume_differences
from ..models.personalized import shared_model_bundle
from ..preflight import check_compression_blocks, check_data, preflight
from ..protocol import RUN_DIR_KEY
from ..records import from_arrayrecord, to_arrayrecord
from ..results import RunRecorder, resolve_run_dir
from ..runlock import SERVERAPP_LOCK, RunFolderLocked, RunLock
from ..strategies import STRATEGIES
from ..strategies.base import TooFewClients
from ..strategies.privacy import with_privacy
from ..strategies.server_optimizers import build_strategy


def check_data_sources(cfg: RunConfig) -> None:
    """Load every dataset of ``data.tasks`` once, so that a missing file or a wrong column
    name fails the run here, before any client trains."""
    check_data(cfg, None)


def check_client_prompts(cfg: RunConfig, grid: Grid) -> None:
    """Check that the prompt pool gives every client its evaluation and training prompts,
    for as many clients as are connected now (at least ``min-clients``): a config that
    asks too much fails here, not in round 1 after the reward models are trained. Each
    client checks again with its own ``num-partitions``."""
    from ..rlhf.client_setup import check_prompt_pool

    num_clients = max(len(list(grid.get_node_ids())), cfg.min_clients)
    check_prompt_pool(cfg.rlhf, num_clients, cfg.seed)


def prepare_reward_models(cfg: RunConfig) -> None:
    """Load (and, the first time, train and cache) both reward models and the warmed-up
    policy here, before any client starts: a bad path fails the run at once, and clients
    never race to train."""
    from ..rlhf.prepare import prepare_rlhf_models  # trl's trainers load slowly; RLHF runs only

    log(INFO, "pfl-app: loading the reward models and the starting policy (the embedded ones are "
        "trained once, a few minutes each)")
    models = prepare_rlhf_models(cfg)
    for scorer in models.scorers:
        log(INFO, "pfl-app: %s reward model: %s", scorer.__name__, scorer.path)
    log(INFO, "pfl-app: starting policy: %s", models.policy)


def resume_point(cfg: RunConfig) -> tuple[Path, Checkpoint]:
    """The run folder named by ``resume-from`` and its last committed checkpoint.

    Raises ``ValueError`` when the folder is not a run, or when the run config differs from
    the one the run was started with (naming the keys).
    """
    run_dir = Path(cfg.resume_from).expanduser().resolve()
    saved_path = run_dir / "config.json"
    if not saved_path.exists():
        raise ValueError(f"run-config key 'resume-from': {run_dir} holds no run (no config.json)")
    try:
        saved = dict(json.loads(saved_path.read_text())["run_config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"run-config key 'resume-from': {saved_path} is damaged ({err})") from None
    differ = resume_differences(saved, cfg.flat)
    if differ:
        raise ValueError(
            f"run-config key 'resume-from': this config differs from the run's in {differ}; "
            "resume with the run's own config (pfl-app run --resume-from does)"
        )
    # No committed round yet (and no round folder either): start over in the same folder.
    found = read_checkpoint(run_dir, cfg.num_server_rounds, warn=lambda text: log(WARNING, "pfl-app: %s", text))
    return run_dir, found or Checkpoint(round=0, shared={}, strategy_state={}, counters={})


def run_server(grid: Grid, context: Context) -> dict:
    """Run a federated job from ``context.run_config`` and return its summary.

    The config is validated before anything else, so a bad value fails the run at once
    with a message naming the key and its allowed values.
    """
    cfg = parse_run_config(context.run_config)
    # The launcher ran these checks already; a run submitted with `flwr run` did not. How
    # the data splits is checked only once min-clients nodes are there to split it for.
    resume = None
    if cfg.resume_from:
        run_dir, resume = resume_point(cfg)
    else:
        run_dir = resolve_run_dir(cfg)
    connected = len(list(grid.get_node_ids()))
    # More nodes may connect before the first round samples: the fractions are checked against
    # a known federation size only (the launcher's, --num-clients), not against this count.
    preflight(cfg, connected if connected >= cfg.min_clients else None, size_known=False)
    if cfg.method_spec.uses_reward_models:
        check_client_prompts(cfg, grid)
        prepare_reward_models(cfg)
    if cfg.compression.settings().blockwise:
        # Needs the shared tensors' sizes: the model (which the run builds next anyway, cached).
        shared = shared_model_bundle(cfg).initial_tensors(cfg.method_spec.strategy.shared_groups)
        check_compression_blocks(cfg, {k: tuple(v.shape) for k, v in shared.items()})
    try:
        lock = RunLock(run_dir, SERVERAPP_LOCK, "a ServerApp")
    except RunFolderLocked as err:
        raise ValueError(str(err)) from None
    try:
        return _run(grid, cfg, run_dir, resume)
    finally:
        lock.release()


def _run(grid: Grid, cfg: RunConfig, run_dir: Path, resume: Checkpoint | None) -> dict:
    recorder = RunRecorder(run_dir, cfg, resume=resume)
    log(INFO, "pfl-app: method=%s model=%s results in %s", cfg.method, cfg.model.name, run_dir)

    strategy = build_strategy(
        cfg.method,
        STRATEGIES,
        optimizer=cfg.server_optimizer,
        learning_rate=cfg.server_learning_rate,
        proximal_mu=cfg.proximal_mu,
        on_round_end=lambda r, rows, shared: recorder.round_done(r, rows, shared, strategy_state(strategy)),
        run_config=cfg,
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_clients,
        min_evaluate_nodes=cfg.min_clients,
        min_available_nodes=cfg.min_clients,
    )
    # The server holds only the shared tensors; it needs the model to know their initial
    # values, which every client builds identically from the same seed.
    bundle = shared_model_bundle(cfg)
    initial_tensors = bundle.initial_tensors(strategy.shared_groups)
    if resume is not None and resume.round > 0:
        if set(resume.shared) != set(initial_tensors):
            raise ValueError(f"the checkpoint in {run_dir} does not hold this method's shared tensors")
        initial_tensors = resume.shared
        restore_strategy_state(strategy, resume.strategy_state)
        restore_random(resume)
        strategy.resume_after = resume.round
        log(INFO, "pfl-app: resuming %s after round %d of %d", run_dir, resume.round, cfg.num_server_rounds)
    initial = to_arrayrecord(initial_tensors)
    log(INFO, "pfl-app: %d shared tensors, %d bytes per copy", len(initial), initial.count_bytes())
    message_config = ConfigRecord({RUN_DIR_KEY: str(run_dir)})
    try:
        # Under central DP the wrapper runs the rounds; the strategy keeps its books either way.
        result = with_privacy(strategy, cfg).start(
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
        recorder.finish({}, stopped=str(err), failed_rows=err.rows)
        raise
    summary = recorder.finish(from_arrayrecord(result.arrays) if result.arrays is not None else {})
    log(INFO, "pfl-app: summary written to %s", run_dir / "summary.json")
    return summary
