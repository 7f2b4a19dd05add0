"""Shared fixtures: offline hubs, Flower's task identity, and a tiny-model config."""

import os

# Read once at import by datasets / huggingface_hub: set before they are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _k, _v in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from pfl_app.config import parse_run_config  # noqa: E402

from .helpers import TINY  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The real runs (``simulation``, about a minute each) first, the rest in file order.

    scripts/test.sh runs the suite on two pytest-xdist workers, which take tests in this
    order as they free up: with the long runs handed out first, the ~1,000 quick tests fill
    in at the end and both workers finish together. A run mostly waits on process starts
    (one core busy of two), which is why two at once nearly halve the wall time."""
    items.sort(key=lambda item: item.get_closest_marker("simulation") is None)


@pytest.fixture
def tiny_cfg():
    return parse_run_config(TINY)


@pytest.fixture
def flower_identity():
    """Flower builds message metadata from the current task's identity; the real
    runtimes set it, unit tests that build messages by hand set it here."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


@pytest.fixture
def project_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_reward_models(tmp_path_factory):
    """Two reward models trained for a few steps on a few pairs: real models, in seconds."""
    from pfl_app.rlhf.reward_models import train_reward_model

    root = tmp_path_factory.mktemp("reward-models")
    for kind in ("helpfulness", "safety"):
        train_reward_model(kind, root / kind, steps=2, batch_size=4, max_pairs=16)
    return {"rlhf.helpfulness-model": str(root / "helpfulness"), "rlhf.safety-model": str(root / "safety")}
