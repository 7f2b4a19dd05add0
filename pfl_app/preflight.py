"""Checks that run before any training: the launcher runs them, and the ServerApp again.

Each check raises :class:`~pfl_app.config.ConfigError` naming the run-config key or the file
at fault and what is allowed, so a bad run stops with exit code 2 before a client trains,
before the reward models are trained, and before a results folder is made. They load the
datasets through :func:`pfl_app.data.assignment.client_split`, the very function every
client calls, so what passes here is what the clients load.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .config import ConfigError, RunConfig


def sampled_clients(num_clients: int, fraction: float) -> int:
    """How many of ``num_clients`` connected clients a fraction samples, as Flower's FedAvg
    computes it before raising it to the minimum: ``int(num_clients * fraction)``."""
    return int(num_clients * fraction)


def _smallest_fraction(num_clients: int, wanted: int) -> float:
    """The smallest fraction with at most three decimals that samples ``wanted`` of
    ``num_clients`` clients (floating point can make ``int(n * (m / n))`` fall short)."""
    thousandths = -(-wanted * 1000 // num_clients)  # ceil(1000 * wanted / n)
    while sampled_clients(num_clients, thousandths / 1000) < wanted:
        thousandths += 1
    return min(thousandths, 1000) / 1000


def check_fractions(cfg: RunConfig, num_clients: int) -> None:
    """``fraction-train`` and ``fraction-evaluate`` must each sample at least ``min-clients``
    of a federation of ``num_clients``.

    Flower's FedAvg samples ``max(int(fraction x clients), min-clients)`` clients a round:
    a fraction below that minimum would silently sample ``min-clients`` instead, so the run
    would not be the one the fraction describes. The message gives both ways out: the
    smallest fraction that samples ``min-clients``, and the largest ``min-clients`` the
    fraction allows.
    """
    for key, fraction in (("fraction-train", cfg.fraction_train), ("fraction-evaluate", cfg.fraction_evaluate)):
        sampled = sampled_clients(num_clients, fraction)
        if sampled >= cfg.min_clients:
            continue
        ways = [f"set {key} >= {_smallest_fraction(num_clients, cfg.min_clients):g}"]
        if sampled >= 1:
            ways.append(f"min-clients <= {sampled}")
        raise ConfigError(
            f"run-config key '{key}' = {fraction:g} samples int({fraction:g} x {num_clients} clients) = {sampled} "
            f"client(s) a round, fewer than run-config key 'min-clients' = {cfg.min_clients}: Flower would "
            f"silently sample {cfg.min_clients} instead; {' or '.join(ways)}"
        )


def check_federation_fit(cfg: RunConfig, num_clients: int, size_known: bool = True) -> None:
    """Check the run's minimums against a federation of ``num_clients`` clients.

    ``min-clients`` above the federation's size would make Flower wait forever for nodes
    that never come; ``min-answers`` above what a round samples could never be met. With
    ``size_known`` (a simulation, or ``--num-clients``: the federation is exactly this
    big), the fractions are checked too (:func:`check_fractions`); a ServerApp that counts
    the nodes connected so far passes ``False``, since more may connect before the
    sampling that matters.
    """
    if cfg.min_clients > num_clients:
        raise ConfigError(
            f"run-config key 'min-clients' = {cfg.min_clients} is more than the federation's {num_clients} "
            f"client(s) (num-supernodes, --num-clients): the run would wait for them forever; "
            f"allowed: 1 to {num_clients}"
        )
    if size_known:
        check_fractions(cfg, num_clients)
    # Flower's FedAvg samples max(int(fraction x connected), min) clients a round.
    sampled = max(sampled_clients(num_clients, cfg.fraction_train), cfg.min_clients)
    if cfg.min_answers > sampled:
        raise ConfigError(
            f"run-config key 'min-answers' = {cfg.min_answers} is more than the {sampled} client(s) a round "
            f"trains (fraction-train {cfg.fraction_train:g} x {num_clients} clients, at least min-clients "
            f"{cfg.min_clients}); allowed: 1 to {sampled}"
        )


def check_wireless(cfg: RunConfig) -> None:
    """``wireless.channel`` must name a :class:`~pfl_app.wireless.interface.Channel` subclass
    that imports, and ``wireless.fading`` (with ``wireless.nakagami-m``) a fading model the
    link profiles accept.

    Both are imported where they are used, on every client, and here (the launcher, the
    ServerApp) first, so that a path that does not import stops the run before it starts
    rather than fail on every client in every round: it must import in all those places.
    """
    from .wireless.interface import build_channel, load_channel_class
    from .wireless.profiles import get_profile, with_overrides

    if cfg.wireless.channel:
        try:
            cls = load_channel_class(cfg.wireless.channel)
            # Built once as the mod builds it, on the base profile: a constructor that takes
            # other arguments would fail on every client.
            build_channel(cls, get_profile(cfg.wireless.profile), seed=cfg.seed, client_id=0, num_clients=1)
        except ValueError as err:
            raise ConfigError(f"run-config key 'wireless.channel' = {cfg.wireless.channel!r}: {err}") from err
    overrides = dict(cfg.link_population.overrides)  # what every client's profile gets
    try:
        for profile in (cfg.wireless.profile, cfg.wireless.poor_profile):
            with_overrides(profile, **overrides)  # imports a fading function named by its path
    except ValueError as err:
        raise ConfigError(f"run-config key 'wireless.fading' = {cfg.wireless.fading!r}: {err}") from err


def check_compression_blocks(cfg: RunConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """``compression.block-size`` must fit the shared tensors it cuts into blocks: a block
    larger than every one of them would make each tensor a single block, and the setting would
    mean nothing. Checked where the shared tensors are known (the ServerApp, before round 1).
    A tensor smaller than the block (a bias) is one shorter block.
    """
    c = cfg.compression
    if not c.settings().blockwise or not shapes:
        return
    largest = max(int(math.prod(s)) for s in shapes.values())
    if c.block_size > largest:
        raise ConfigError(
            f"run-config key 'compression.block-size' = {c.block_size} is larger than every tensor method "
            f"{cfg.method!r} shares (the largest has {largest} elements); allowed: 1 to {largest}"
        )


def check_model(cfg: RunConfig) -> None:
    """``model.name`` must be an embedded model, an existing model folder, or reachable on
    the hub; the message says which of the three was tried."""
    from .models.loading import EMBEDDED_MODELS, TINY_MODELS, known_model_names

    name = cfg.model.name
    if name in EMBEDDED_MODELS or name in TINY_MODELS:
        return
    embedded = ", ".join(known_model_names())
    path = Path(name).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ConfigError(
                f"run-config key 'model.name' = {name!r} is a local path, but not a model folder (one "
                f"written by save_pretrained, with a config.json); or use an embedded model: {embedded}"
            )
        return
    if name.startswith(("/", ".", "~")):
        raise ConfigError(f"run-config key 'model.name' = {name!r}: no such folder; embedded models: {embedded}")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(
            f"run-config key 'model.name' = {name!r} is not an embedded model ({embedded}), not an existing "
            "local folder, and the hub cannot be asked (HF_HUB_OFFLINE=1)"
        )
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"run-config key 'model.name' = {name!r} is not an embedded model ({embedded}), not an existing "
            f"local folder, and the hub did not give it: {str(err).splitlines()[0]}"
        ) from err


def check_reward_models(cfg: RunConfig) -> None:
    """``rlhf.helpfulness-model`` and ``rlhf.safety-model``, when set, must be a model folder
    or reachable on the hub.

    Without this check a wrong path is found only when the ServerApp loads the models: after
    the run has started, and after the other reward model (if embedded) was trained.
    """
    for key, name in (("rlhf.helpfulness-model", cfg.rlhf.helpfulness_model),
                      ("rlhf.safety-model", cfg.rlhf.safety_model)):
        if not name:
            continue  # the embedded one
        what = f"run-config key '{key}' = {name!r}"
        hint = "leave it empty for the embedded one"
        path = Path(name).expanduser()
        if path.exists():
            if not (path.is_dir() and (path / "config.json").is_file()):
                raise ConfigError(f"{what} is a local path, but not a model folder (one written by "
                                  f"save_pretrained, with a config.json); {hint}")
            continue
        if name.startswith(("/", ".", "~")):
            raise ConfigError(f"{what}: no such folder; {hint}")
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ConfigError(f"{what} is not an existing local folder, and the hub cannot be asked "
                              f"(HF_HUB_OFFLINE=1); {hint}")
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{what} is not an existing local folder, and the hub did not give it: "
                              f"{str(err).splitlines()[0]}; {hint}") from err


def check_data(cfg: RunConfig, num_clients: int | None) -> None:
    """Load every client's data as the client will, and check it can train and be scored.

    Checks that each file parses, that the configured columns exist without nulls, that a
    classification set has two labels or more, that the partitioner gives every client
    train and test rows, that ``model.max-length`` leaves room for the text, and that
    ``data.tasks`` lists no more datasets than there are clients. With ``num_clients``
    ``None`` only the datasets themselves are checked.
    """
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the clients show them; here they would repeat per client
    try:
        _check_data(cfg, num_clients)
    finally:
        if shown:
            datasets.enable_progress_bars()


def _check_data(cfg: RunConfig, num_clients: int | None) -> None:
    from .data.assignment import client_split, load_task_source
    from .models.loading import load_tokenizer
    from .tasks import task_of, text_budget

    tasks = cfg.data.tasks
    if num_clients is not None and len(tasks) > num_clients:
        raise ConfigError(
            f"run-config key 'data.tasks' lists {len(tasks)} datasets but the federation has {num_clients} "
            "client(s) (num-supernodes): every dataset needs a client; list at most "
            f"{num_clients}, or add clients"
        )
    try:
        tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    except (OSError, ValueError) as err:  # a model folder without a usable tokenizer
        raise ConfigError(f"run-config key 'model.name' = {cfg.model.name!r}: its tokenizer cannot be loaded "
                          f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from err
    for name in tasks:
        try:
            dataset = load_task_source(cfg.data, name)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            raise ConfigError(f"run-config key 'data.tasks': dataset {name!r} cannot be used: {err}") from err
        try:
            text_budget(task_of(name, dataset), tokenizer, cfg.model.max_length)
        except ValueError as err:
            raise ConfigError(f"run-config key 'model.max-length': {err}") from err
    for client in range(num_clients or 0):
        try:
            name, split = client_split(cfg.data, cfg.seed, client, num_clients)
        except ValueError as err:
            # Name the dataset too: with several in data.tasks the message alone would not say which.
            # Client i holds data.tasks[i % len(data.tasks)] (assignment.task_slot).
            name = tasks[client % len(tasks)]
            raise ConfigError(
                f"run-config key 'data.partitioner' = {cfg.data.partitioner!r} cannot give client {client} of "
                f"{num_clients} its data from dataset {name!r} (data.tasks): {err}"
            ) from err
        for part in ("train", "test"):
            if split[part].num_rows == 0:
                raise ConfigError(
                    f"run-config key 'data.test-fraction' = {cfg.data.test_fraction:g} leaves client {client} "
                    f"({name!r}) no {part} examples of its {sum(s.num_rows for s in split.values())}; "
                    "use fewer clients, another partitioner or more data"
                )


def check_precision(cfg: RunConfig, device: str | None = None) -> None:
    """``train.precision`` must be one the device that trains can run: ``bf16`` needs native
    bfloat16 arithmetic (see :mod:`pfl_app.precision`).

    Only meaningful on the machine whose clients train, on the device they train on
    (``device``; default: what this process would train on): the launcher checks it for a
    simulation's clients; a deployed client checks its own hardware at its first message
    (:func:`pfl_app.client.handlers`), since the ServerApp's machine is not the one that trains.
    """
    from .precision import precision_problem

    if (problem := precision_problem(cfg.train.precision, device)) is not None:
        raise ConfigError(problem)


def preflight(cfg: RunConfig, num_clients: int | None, size_known: bool = True,
              training_device: str | None = None) -> None:
    """Every check that needs no training.

    Parameters
    ----------
    num_clients
        The federation's size, when it is known (a simulation, or the nodes connected to
        the ServerApp); ``None`` checks the model and each dataset alone, not how the
        data is split (a deployment whose nodes are not all connected yet).
    size_known
        Whether ``num_clients`` is the federation's final size (see
        :func:`check_federation_fit`); the fractions are checked only then.
    training_device
        The device type (``cpu``, ``cuda``) the clients train on, when they train on this
        machine (a simulation started by the launcher): ``train.precision`` is then checked
        against it. ``None`` (the ServerApp, whose machine may not be the one that trains)
        leaves that check to the clients.
    """
    if training_device is not None:
        check_precision(cfg, training_device)
    if num_clients is not None:
        check_federation_fit(cfg, num_clients, size_known)
    check_wireless(cfg)
    check_model(cfg)
    if not cfg.method_spec.uses_reward_models:
        check_data(cfg, num_clients)
    else:
        check_reward_models(cfg)
