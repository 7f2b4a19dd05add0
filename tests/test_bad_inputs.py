"""A corpus of bad inputs: each one must stop the command with an exit code and a message
that names the key or the file at fault, never with a Python traceback.

Every case is a small function that, given ``tmp_path``, writes the files it needs and
returns a :class:`Bad`: the command line, the exit code it must give (2: a config or input
error found before anything started; 1: a run that was started and failed) and the pieces
of text its output must hold. The commands are called in-process (``pfl_app.cli.main``,
``pfl_app.experiments.main``), and no case may get as far as starting a simulation: the
test replaces what would start one with a function that fails the test.

See docs/bad-inputs.md for the classes covered.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from pfl_app import checkpoint
from pfl_app.cli import main as cli_main
from pfl_app.experiments import main as grid_main
from pfl_app.launch import Scenario, resolve_run_config
from pfl_app.runlock import LAUNCHER_LOCK, RunLock

from .helpers import TINY

APP = Path(__file__).resolve().parents[1]


@dataclass
class Bad:
    """What a case runs and what it must give.

    Parameters
    ----------
    argv : list of str
        The arguments of ``entry``.
    code : int
        The exit code it must return (or exit with).
    needles : tuple of str
        Texts the output must hold (compared without whitespace: rich wraps long lines,
        and may fold a long path in the middle).
    entry : callable
        ``pfl_app.cli.main`` or ``pfl_app.experiments.main``.
    held : list
        Objects that must live until the command has run (a lock held by "another
        process"); each one's ``release()`` is called after.
    """

    argv: list[str]
    code: int
    needles: tuple[str, ...]
    entry: Callable[[list[str]], int] = cli_main
    held: list[Any] = field(default_factory=list)


CASES: list[Any] = []


def case(name: str):
    """Register the decorated function as the case ``name`` (its test id)."""
    def register(build: Callable[[Path], Bad]) -> Callable[[Path], Bad]:
        CASES.append(pytest.param(build, id=name))
        return build
    return register


# --- helpers that build command lines and files ------------------------------------------

def _toml(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def cli(tmp_path: Path, command: str, *extra: str, c: str | None = None, scenario: Path | None = None) -> list[str]:
    """``pfl-app <command>`` on this app with ``scenario``, by default one of two clients
    with the tiny model config and a results folder under ``tmp_path``; then the overrides
    ``c`` and ``extra``."""
    if scenario is None:
        scenario = write(tmp_path / "tiny.toml", "[federation]\nnum-supernodes = 2\n\n[run-config]\n" + "".join(
            f'"{k}" = {_toml(v)}\n' for k, v in {**TINY, "results-dir": str(tmp_path / "results")}.items()))
    argv = [command, "--app-dir", str(APP), "--scenario", str(scenario)]
    if c is not None:
        argv += ["-c", c]
    return argv + list(extra)


def validate(tmp_path: Path, c: str | None = None, *extra: str, scenario: Path | None = None) -> list[str]:
    return cli(tmp_path, "validate", *extra, c=c, scenario=scenario)


def config_case(name: str, c: str, *needles: str, command: str = "validate") -> None:
    """A run-config override that ``pfl-app <command>`` must refuse with exit code 2,
    naming what ``needles`` hold."""
    case(f"{command}-{name}")(lambda tmp_path: Bad(cli(tmp_path, command, c=c), 2, needles))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def rows(n: int = 24, labels: int = 2) -> list[dict[str, Any]]:
    return [{"text": f"item {i} about topic {i % labels}", "label": f"t{i % labels}"} for i in range(n)]


def data_case(name: str, make: Callable[[Path], Path | str], *needles: str, extra: str = "",
              clients: int | None = None) -> None:
    """``pfl-app validate`` with ``data.tasks`` set to what ``make(tmp_path)`` writes; the
    output must name it (its path) and hold ``needles``."""
    def build(tmp_path: Path) -> Bad:
        source = str(make(tmp_path))
        args = ["--num-clients", str(clients)] if clients else []
        return Bad(validate(tmp_path, f"data.tasks='{source}' {extra}".strip(), *args), 2,
                   ("data.tasks", source, *needles))
    case(f"data-{name}")(build)


def scenario_case(name: str, text: str | bytes, *needles: str) -> None:
    """``pfl-app validate --scenario FILE`` with ``text`` as the file; the output must name
    the file and hold ``needles``."""
    def build(tmp_path: Path) -> Bad:
        path = write(tmp_path / "scenario.toml", text)
        return Bad(validate(tmp_path, scenario=path), 2, (str(path), *needles))
    case(f"scenario-{name}")(build)


def grid_case(name: str, text: str, *needles: str) -> None:
    """``python -m pfl_app.experiments FILE --dry-run`` with ``text`` as the grid file: exit
    code 2, naming the file and what ``needles`` hold."""
    def build(tmp_path: Path) -> Bad:
        path = write(tmp_path / "grid.toml", text)
        return Bad([str(path), "--app-dir", str(APP), "--dry-run"], 2, (str(path), *needles), grid_main)
    case(f"grid-{name}")(build)


def user_function(tmp_path: Path, package: str, body: str) -> str:
    """Write ``<package>/source.py`` under ``tmp_path`` (on ``sys.path`` during the test),
    whose ``load()`` runs ``body``; return its ``package.module:function`` name."""
    write(tmp_path / package / "__init__.py", "")
    write(tmp_path / package / "source.py", f"import datasets\n\n\ndef load():\n    {body}\n")
    return f"{package}.source:load"


def run_folder(tmp_path: Path, rounds: int = 3, committed: int = 1) -> Path:
    """A run folder as a run leaves it after ``committed`` of ``rounds`` rounds: its
    config.json and federation.json, and real checkpoints of small arrays; nothing runs."""
    flat = resolve_run_config(
        Scenario({"num-supernodes": 2}, {}),
        {**TINY, "num-server-rounds": rounds, "results-dir": str(tmp_path / "results"), "run-name": "crashed"},
        APP,
    )
    folder = Path(flat["results-dir"]) / flat["run-name"]
    folder.mkdir(parents=True)
    write(folder / "config.json", json.dumps({"method": flat["method"], "run_dir": str(folder), "run_config": flat}))
    write(folder / "federation.json", json.dumps({"num-supernodes": 2}))
    for r in range(1, committed + 1):
        checkpoint.write(folder, r, {"adapter.weight": np.full((2, 2), float(r))}, {}, {"uplink_bytes": r})
        checkpoint.commit(folder, r)
        jsonl(folder / "metrics.jsonl", [{"round": k, "client": 0, "status": "ok"} for k in range(1, r + 1)])
    return folder


def resume(folder: Path, *extra: str) -> list[str]:
    return ["run", "--app-dir", str(APP), "--resume-from", str(folder), *extra]


# --- run-config keys: unknown keys and typos --------------------------------------------

config_case("unknown-key-lora-rank", "lora.rank=8", "unknown run-config key", "did you mean 'lora.r' for 'lora.rank'")
config_case("typo-underscores", "num_server_rounds=5", "did you mean 'num-server-rounds' for 'num_server_rounds'")
config_case("typo-wireless-profile", "wireless.profle='wifi'", "'wireless.profile'", "for 'wireless.profle'")
config_case("unknown-table", "optimizer.lr=0.1", "optimizer.lr", "unknown run-config key")
config_case("unknown-key-run", "lora.rank=8", "lora.rank", command="run")
config_case("unknown-key-reward-models", "rlhf.helpfullness-model='x'", "rlhf.helpfullness-model",
            command="reward-models")

# --- wrong types -------------------------------------------------------------------------

config_case("type-str-for-int", "num-server-rounds='3'", "'num-server-rounds'", "must be of type int")
config_case("type-float-for-int", "lora.r=2.5", "'lora.r'", "must be of type int")
config_case("type-bool-for-int", "seed=true", "'seed'", "must be of type int")
config_case("type-str-for-float", "train.learning-rate='fast'", "'train.learning-rate'", "must be of type float")
config_case("type-int-for-str", "model.name=5", "'model.name'", "must be of type str")
config_case("type-int-for-bool", "rlhf.carry-optimizer=1", "'rlhf.carry-optimizer'", "must be of type bool")
config_case("type-nan", "data.alpha=nan", "'data.alpha' = nan", "not a finite number", "a number > 0")
config_case("type-inf-not-allowed", "train.learning-rate=inf", "'train.learning-rate' = inf", "not a finite number")
config_case("type-minus-inf", "rlhf.aggregation-temperature=-inf", "'rlhf.aggregation-temperature' = -inf",
            "a number > 0, or inf")
config_case("type-list", "data.tasks=['bbc-news']", "'data.tasks'", "must be of type str")

# --- values out of range -------------------------------------------------------------------

config_case("range-rounds-zero", "num-server-rounds=0", "'num-server-rounds' = 0", "a number > 0")
config_case("range-seed-negative", "seed=-1", "'seed' = -1", "a number >= 0")
config_case("range-fraction-train", "fraction-train=1.5", "'fraction-train' = 1.5", "(0, 1]")
config_case("range-fraction-evaluate-zero", "fraction-evaluate=0", "'fraction-evaluate'", "(0, 1]")
config_case("range-test-fraction-one", "data.test-fraction=1.0", "'data.test-fraction'", "(0, 1)")
config_case("range-adapter-dropout", "adapter.dropout=1.0", "'adapter.dropout'", "[0, 1)")
config_case("range-lora-dropout", "lora.dropout=-0.1", "'lora.dropout'", "[0, 1)")
config_case("range-num-generations", "rlhf.num-generations=1", "'rlhf.num-generations'", ">= 2")
config_case("range-retransmissions", "wireless.max-retransmissions=-2", "'wireless.max-retransmissions'", "-1")
config_case("range-safety-weight", "rlhf.safety-weight-max=1.2", "'rlhf.safety-weight-max'", "[0, 1]")
config_case("range-aircomp-power-zero", "wireless.aircomp-power-w=0.0", "'wireless.aircomp-power-w' = 0",
            "a number > 0")
config_case("range-aircomp-power-negative", "wireless.aircomp-power-w=-0.2", "'wireless.aircomp-power-w'",
            "a number > 0")
config_case("range-aircomp-threshold", "wireless.aircomp-threshold=-0.1", "'wireless.aircomp-threshold'",
            "a number >= 0")
config_case("range-min-clients-zero", "min-clients=0", "'min-clients' = 0", "a number > 0")
config_case("range-empty-target-modules", "lora.target-modules=' , '", "'lora.target-modules'", "non-empty list")
config_case("range-empty-tasks", "data.tasks=''", "'data.tasks'", "non-empty list")
config_case("range-timeout-negative", "round-timeout-s=-5", "'round-timeout-s'", "a number > 0")
config_case("range-clients-per-round", "schedule.clients-per-round=-1", "'schedule.clients-per-round' = -1",
            "a number >= 0")
config_case("range-pf-window", "schedule.pf-window=0.5", "'schedule.pf-window' = 0.5", "a number >= 1")
config_case("range-compression-block-zero", "compression.block-size=0", "'compression.block-size' = 0",
            "a whole number >= 1")
config_case("range-dp-noise-zero", "dp.mode='central' dp.noise-multiplier=0.0", "'dp.noise-multiplier' = 0.0",
            "a number > 0")
config_case("range-dp-clipping-negative", "dp.mode='central' dp.clipping-norm=-1.0", "'dp.clipping-norm' = -1.0",
            "a number > 0")
config_case("range-dp-delta-one", "dp.mode='central' dp.delta=1.0", "'dp.delta' = 1.0", "a number in (0, 1)")
config_case("range-dp-epsilon-large", "dp.mode='local' dp.epsilon=3.0", "'dp.epsilon' = 3.0", "a number in (0, 1)")

# --- values outside a closed set -----------------------------------------------------------

config_case("choice-dp-mode", "dp.mode='centrall'", "'dp.mode' = 'centrall'", "none, central, local")
config_case("choice-method", "method='fedavg'", "'method' = 'fedavg'", "allowed values", "pftt")
config_case("choice-profile", "wireless.profile='5g'", "'wireless.profile' = '5g'", "allowed values", "wifi")
config_case("choice-partitioner", "data.partitioner='random'", "'data.partitioner'", "dirichlet")
config_case("choice-non-linearity", "adapter.non-linearity='sigmoid'", "'adapter.non-linearity'", "gelu")
config_case("choice-server-optimizer", "server-optimizer='sgd'", "'server-optimizer'", "fedadam")
config_case("choice-scale-rewards", "rlhf.scale-rewards='std'", "'rlhf.scale-rewards'", "group")
config_case("choice-fading", "wireless.fading='nakagami'", "'wireless.fading'", "allowed values: '', rayleigh")
config_case("choice-schedule-policy", "schedule.policy='greedy'", "'schedule.policy' = 'greedy'",
            "allowed values: random, best-snr, proportional-fair, age-aware, deadline")
config_case("choice-schedule-policy-path", "schedule.policy='no_such_module:policy'", "'schedule.policy'",
            "no_such_module")
config_case("choice-case-matters", "method='PFTT'", "'method' = 'PFTT'", "allowed values")
config_case("choice-device", "wireless.device='toaster'", "'wireless.device' = 'toaster'",
            "allowed values: '', phone-sd8gen3", "jetson-orin-nano", "laptop-ryzen7-7840u")
config_case("choice-access", "wireless.access='fdma'", "'wireless.access' = 'fdma'",
            "allowed values: dedicated, tdma, ofdma")
config_case("choice-access-shares", "wireless.access='tdma' wireless.access-shares='pf'",
            "'wireless.access-shares' = 'pf'", "allowed values: equal, proportional-fair")
config_case("choice-coherence", "wireless.coherence='symbol'", "'wireless.coherence' = 'symbol'",
            "allowed values: message, packet")
config_case("choice-compression-codec", "compression.uplink='int2'", "'compression.uplink' = 'int2'",
            "allowed values: none, fp16, int8, int4")
config_case("choice-compression-downlink", "compression.downlink='bf16'", "'compression.downlink' = 'bf16'",
            "allowed values: none, fp16, int8, int4")
config_case("choice-aircomp-aggregation", "wireless.aggregation='analog'", "'wireless.aggregation' = 'analog'",
            "allowed values: digital, aircomp")
config_case("choice-precision", "train.precision='fp16'", "'train.precision' = 'fp16'",
            "allowed values: fp32, bf16, auto")

# --- rules across keys -----------------------------------------------------------------------

config_case("cross-faults-sum", "faults.fail-fraction=0.6 faults.corrupt-fraction=0.6",
            "'faults.fail-fraction'", "'faults.corrupt-fraction'", "<= 1")
config_case("cross-distance-order", "wireless.distance-min=100.0 wireless.distance-max=50.0",
            "'wireless.distance-max'", "'wireless.distance-min'")
config_case("cross-distance-min-zero", "wireless.distance-max=100.0", "'wireless.distance-min' = 0",
            "'wireless.distance-max' = 100", "0 < distance-min")
config_case("cross-deadline-policy-without-deadline", "schedule.policy='deadline'",
            "'schedule.policy' = 'deadline'", "'wireless.deadline-s' = 0",
            "allowed values without a deadline: random, best-snr, proportional-fair, age-aware")
config_case("cross-device-compute-s", "wireless.device='phone-sd8gen3' wireless.compute-s=2.0",
            "'wireless.device' = 'phone-sd8gen3'", "'wireless.compute-s' = 2")
config_case("cross-access-own-channel", "wireless.access='tdma' wireless.channel='pfl_app.wireless.link:LinkChannel'",
            "'wireless.access' = 'tdma'", "'wireless.channel'", "allowed with it: dedicated")
config_case("cross-compression-partial", "compression.uplink='int8' wireless.loss-mode='partial'",
            "'compression.uplink' = 'int8'", "'wireless.loss-mode' = 'partial'", "allowed with compression")
config_case("cross-dp-own-rule", "dp.mode='central' method='flexlora'", "'dp.mode' = 'central'",
            "flexlora", "aggregate", "allowed")
config_case("cross-dp-server-optimizer", "dp.mode='central' server-optimizer='fedadam'", "'dp.mode' = 'central'",
            "'server-optimizer' = 'fedadam'", "allowed with central DP: fedavg, fedprox")
config_case("cross-dp-local-compression", "dp.mode='local' compression.uplink='int8'", "'dp.mode' = 'local'",
            "'compression.uplink' = 'int8'", "allowed with local DP")
config_case("cross-dp-aircomp", "dp.mode='central' wireless.aggregation='aircomp'", "'dp.mode' = 'central'",
            "'wireless.aggregation' = 'aircomp'", "allowed with DP: digital")
config_case("cross-compression-aircomp", "compression.uplink='int4' wireless.aggregation='aircomp'",
            "'compression.uplink' = 'int4'", "'wireless.aggregation' = 'aircomp'", "allowed with aircomp: none")
config_case("cross-pf-shares-dedicated", "wireless.access-shares='proportional-fair'",
            "'wireless.access-shares' = 'proportional-fair'", "'wireless.access' = 'dedicated'",
            "allowed with it: equal")
config_case("cross-pf-shares-aircomp",
            "wireless.access='ofdma' wireless.access-shares='proportional-fair' wireless.aggregation='aircomp'",
            "'wireless.access-shares' = 'proportional-fair'", "'wireless.aggregation' = 'aircomp'",
            "allowed with it: equal")
config_case("cross-aircomp-local-only", "method='local-only' wireless.aggregation='aircomp'",
            "'wireless.aggregation' = 'aircomp'", "'local-only' shares none", "allowed:", "'digital'")
config_case("cross-aircomp-rlhf-local", "method='rlhf-local' wireless.aggregation='aircomp'",
            "'wireless.aggregation' = 'aircomp'", "'rlhf-local' shares none", "shared_groups")
config_case("cross-aircomp-own-rule", "method='pftt-median' wireless.aggregation='aircomp'",
            "'wireless.aggregation' = 'aircomp'", "'pftt-median' aggregates by its own rule")
config_case("cross-final-eval-prompts", "rlhf.eval-prompts=8 rlhf.final-eval-prompts=4",
            "'rlhf.final-eval-prompts' = 4", "'rlhf.eval-prompts'")
config_case("cross-scale-rewards", "rlhf.reward-aggregation='normalize-then-sum' rlhf.scale-rewards='batch'",
            "'rlhf.scale-rewards' = 'batch'", "normalize-then-sum")

# --- run names that would not be one plain folder --------------------------------------------

config_case("run-name-slash", "run-name='a/b'", "'run-name' = 'a/b'", "plain folder name")
config_case("run-name-dotdot", "run-name='..'", "'run-name' = '..'", "plain folder name")
config_case("run-name-hidden", "run-name='.hidden'", "'run-name' = '.hidden'", "not starting with '.'")
config_case("run-name-space", "run-name='my run'", "'run-name' = 'my run'", "plain folder name")
config_case("run-name-too-long", f"run-name='{'r' * 201}'", "'run-name'", "at most 200 characters")

# --- -c overrides themselves -------------------------------------------------------------------

config_case("override-no-equals", "seed", "override 'seed'", "key=value")
config_case("override-no-key", "=5", "override '=5'", "key=value")
config_case("override-given-twice", "seed=1 seed=2", "'seed'", "given twice")


@case("override-given-twice-across-c")
def _(tmp_path):
    return Bad(cli(tmp_path, "validate", "-c", "lora.r=4", c="lora.r=8"), 2, ("'lora.r'", "given twice"))


# --- scenario files ------------------------------------------------------------------------------

@case("scenario-missing")
def _(tmp_path):
    path = tmp_path / "nope.toml"
    return Bad(validate(tmp_path, scenario=path), 2, (str(path), "does not exist"))


@case("scenario-directory")
def _(tmp_path):
    path = tmp_path / "scenarios"
    path.mkdir()
    return Bad(validate(tmp_path, scenario=path), 2, (str(path), "is not a file"))


scenario_case("toml-syntax", "[federation]\nnum-supernodes = 2\n\n[run-config]\nseed = = 3\n",
              "not valid TOML", "line 5")
scenario_case("unknown-table", "[federation]\nnum-supernodes = 2\n[runconfig]\nseed = 1\n", "runconfig",
              "unknown table")
scenario_case("run-config-not-a-table", 'run-config = "seed=1"\n', "[run-config] must be a table")
scenario_case("federation-not-a-table", "federation = 4\n", "[federation] must be a table")
scenario_case("federation-unknown-key", "[federation]\nnum-clients = 4\n", "num-clients",
              "unknown [federation] key")
scenario_case("federation-zero", "[federation]\nnum-supernodes = 0\n", "num-supernodes", ">= 1, got 0")
scenario_case("federation-negative", "[federation]\nnum-supernodes = -2\n", "num-supernodes", "got -2")
scenario_case("federation-bool", "[federation]\nnum-supernodes = true\n", "num-supernodes", "got True")
scenario_case("federation-float", "[federation]\nnum-supernodes = 2.0\n", "num-supernodes", "got 2.0")
scenario_case("federation-negative-cpus", "[federation]\nclient-resources-num-cpus = -1\n",
              "client-resources-num-cpus", ">= 0")
scenario_case("not-utf8", b"[run-config]\nrun-name = \"caf\xe9\"\n", "not UTF-8")


@case("scenario-run-config-bad-value")
def _(tmp_path):
    path = write(tmp_path / "scenario.toml", "[federation]\nnum-supernodes = 2\n\n[run-config.lora]\nr = 0\n")
    return Bad(validate(tmp_path, scenario=path), 2, ("'lora.r' = 0", "a number > 0"))


@case("scenario-run-config-unknown-nested-key")
def _(tmp_path):
    path = write(tmp_path / "scenario.toml", "[run-config.lora]\nrank = 8\n")
    return Bad(validate(tmp_path, scenario=path), 2, ("lora.rank", "unknown run-config key"))


# --- the command line ----------------------------------------------------------------------------

@case("cli-num-clients-zero")
def _(tmp_path):
    return Bad(validate(tmp_path, None, "--num-clients", "0"), 2, ("--num-clients", ">= 1"))


@case("cli-num-clients-negative")
def _(tmp_path):
    return Bad(cli(tmp_path, "run", "--num-clients", "-3"), 2, ("--num-clients", ">= 1"))


@case("cli-num-clients-not-a-number")
def _(tmp_path):
    return Bad(validate(tmp_path, None, "--num-clients", "four"), 2, ("--num-clients", "invalid int value"))


@case("cli-unknown-option")
def _(tmp_path):
    return Bad(validate(tmp_path, None, "--rounds", "3"), 2, ("unrecognized arguments", "--rounds"))


@case("cli-unknown-command")
def _(tmp_path):
    return Bad(["train", "--app-dir", str(APP)], 2, ("invalid choice", "'train'"))


@case("cli-app-dir-not-an-app")
def _(tmp_path):
    (tmp_path / "empty").mkdir()
    return Bad(["validate", "--app-dir", str(tmp_path / "empty")], 2,
               ("--app-dir", str(tmp_path / "empty"), "pyproject.toml"))


@case("cli-app-dir-missing")
def _(tmp_path):
    return Bad(["run", "--app-dir", str(tmp_path / "gone")], 2, ("--app-dir", str(tmp_path / "gone"), "no such folder"))


@case("cli-results-dir-is-a-file")
def _(tmp_path):
    path = write(tmp_path / "results.txt", "not a folder")
    return Bad(cli(tmp_path, "run", c=f"results-dir='{path}'"), 2, ("'results-dir'", str(path), "is a file"))


@case("cli-results-dir-under-a-file")
def _(tmp_path):
    path = write(tmp_path / "results.txt", "not a folder") / "runs"
    return Bad(cli(tmp_path, "run", c=f"results-dir='{path}'"), 2, ("'results-dir'", str(path)))


@case("cli-run-name-already-used")
def _(tmp_path):
    jsonl(tmp_path / "results" / "taken" / "metrics.jsonl", [{"round": 1}])
    return Bad(cli(tmp_path, "run", c="run-name='taken'"), 2,
               (str(tmp_path / "results" / "taken"), "already holds a run"))


@case("cli-ray-address-unreachable")
def _(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Bad(cli(tmp_path, "run", "--ray-address", f"127.0.0.1:{port}"), 1,
               ("run failed", f"127.0.0.1:{port}", "ray start --head"))


@case("cli-reward-models-task-method")
def _(tmp_path):
    return Bad(cli(tmp_path, "reward-models", c="method='pftt'"), 2, ("'method' = 'pftt'", "uses no reward models"))


# --- data files --------------------------------------------------------------------------------

data_case("missing-file", lambda t: t / "nope.jsonl", "not found")
data_case("missing-relative-path", lambda t: "./no/such/place", "not found")
data_case("unsupported-suffix", lambda t: write(t / "data.txt", "text,label\na,b\n"), "allowed suffixes")
data_case("jsonl-bad-line", lambda t: write(t / "d.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n'
                                        '{"text": "c" "label": 0}\n'), "line 3", "not valid JSON")
data_case("jsonl-line-not-object", lambda t: write(t / "d.jsonl", '{"text": "a", "label": 0}\n[1, 2]\n'),
          "line 2", "JSON object")
data_case("json-syntax", lambda t: write(t / "d.json", '[\n  {"text": "a", "label": 0},\n  {"text": "b",,}\n]\n'),
          "line 3", "not valid JSON")
data_case("empty-file", lambda t: write(t / "d.jsonl", "\n\n"), "is empty")
data_case("csv-header-only", lambda t: write(t / "d.csv", "text,label\n"), "no rows")
data_case("csv-not-utf8", lambda t: write(t / "d.csv", b"text,label\nfine,0\ncaf\xe9,1\n"), "not UTF-8", "line 3")
data_case("csv-ragged", lambda t: write(t / "d.csv", "text,label\na,0\nb,1,extra,more\nc,0\n"), "Cannot read",
          "line 3")
data_case("parquet-garbage", lambda t: write(t / "d.parquet", b"this is not parquet at all"), "PARQUET")
data_case("missing-columns", lambda t: jsonl(t / "d.jsonl", [{"body": f"b{i}", "topic": i % 2} for i in range(12)]),
          "'body'", "'topic'", "data.text-column", "data.label-column")
data_case("column-key-points-nowhere", lambda t: jsonl(t / "d.jsonl", rows()), "'body'", "data.text-column",
          extra="data.text-column='body'")
data_case("null-text", lambda t: jsonl(t / "d.jsonl", [{**r, "text": None if i % 4 == 0 else r["text"]}
                                                       for i, r in enumerate(rows(12))]),
          "column 'text' (data.text-column)", "3 of 12 rows")
data_case("null-completion", lambda t: jsonl(t / "d.jsonl", [{"prompt": f"p{i}", "completion": None if i == 2 else "c"}
                                                             for i in range(10)]),
          "column 'completion' (data.completion-column)", "1 of 10 rows")
data_case("single-label", lambda t: jsonl(t / "d.jsonl", rows(12, labels=1)), "at least two labels")
data_case("folder-not-a-dataset", lambda t: write(t / "mydata" / "notes.txt", "hello").parent, "save_to_disk")
data_case("hub-id-offline", lambda t: "someone/no-such-dataset", "cannot be reached")


@case("data-function-does-not-import")
def _(tmp_path):
    return Bad(validate(tmp_path, "data.tasks='nosuchpkg_4711.source:load'"), 2,
               ("data.tasks", "nosuchpkg_4711.source:load", "Cannot import 'nosuchpkg_4711.source'"))


@case("data-function-module-fails-to-import")
def _(tmp_path):
    spec = user_function(tmp_path, "brokenimport_pkg", "return None")
    write(tmp_path / "brokenimport_pkg" / "source.py", "import no_such_dependency_4711\n")
    return Bad(validate(tmp_path, f"data.tasks='{spec}'"), 2, ("data.tasks", spec, "no_such_dependency_4711"))


@case("data-function-missing")
def _(tmp_path):
    spec = user_function(tmp_path, "nofunc_pkg", "return None").replace(":load", ":fetch")
    return Bad(validate(tmp_path, f"data.tasks='{spec}'"), 2, ("data.tasks", spec, "no function 'fetch'"))


@case("data-function-raises")
def _(tmp_path):
    spec = user_function(tmp_path, "raising_pkg", "raise KeyError('shard-7')")
    return Bad(validate(tmp_path, f"data.tasks='{spec}'"), 2, ("data.tasks", spec, "raised KeyError", "shard-7"))


@case("data-function-returns-list")
def _(tmp_path):
    spec = user_function(tmp_path, "listing_pkg", "return [{'text': 'a', 'label': 0}]")
    return Bad(validate(tmp_path, f"data.tasks='{spec}'"), 2, ("data.tasks", spec, "gives a list", "datasets.Dataset"))


@case("data-function-returns-no-rows")
def _(tmp_path):
    spec = user_function(tmp_path, "emptyrows_pkg", "return datasets.Dataset.from_dict({'text': [], 'label': []})")
    return Bad(validate(tmp_path, f"data.tasks='{spec}'"), 2, ("data.tasks", spec, "holds no rows"))


# --- how the data is split across the clients --------------------------------------------------

config_case("partition-more-datasets-than-clients", "data.tasks='bbc-news,chatterbot-qa,bbc-news'",
            "'data.tasks' lists 3 datasets", "2 client(s)")
config_case("partition-natural-count", "data.partitioner='natural'", "'data.partitioner' = 'natural'",
            "num-supernodes")
data_case("partition-too-few-rows", lambda t: jsonl(t / "few.jsonl", rows(6)), extra="data.partitioner='iid'",
          clients=5)


@case("partition-by-missing-column")
def _(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", rows())
    return Bad(validate(tmp_path, f"data.tasks='{path}' data.partition-by='region'"), 2,
               ("data.partition", "'region'"))


# --- model.max-length too short for the data ---------------------------------------------------

config_case("max-length-classification", "model.max-length=24", "'model.max-length'", "allowed: >=")
config_case("max-length-question-answer", "model.max-length=12 data.tasks='chatterbot-qa' data.partitioner='iid'",
            "'model.max-length'", "allowed: >=")

# --- models --------------------------------------------------------------------------------------

config_case("model-unknown-offline", "model.name='someone/no-such-model'", "'model.name' = 'someone/no-such-model'",
            "smollm2-135m-instruct, tiny-llama", "HF_HUB_OFFLINE")


@case("model-a-file")
def _(tmp_path):
    path = write(tmp_path / "weights.bin", "x")
    return Bad(validate(tmp_path, f"model.name='{path}'"), 2, ("'model.name'", str(path), "not a model folder"))


@case("model-folder-without-config")
def _(tmp_path):
    path = write(tmp_path / "model" / "weights.safetensors", "x").parent
    return Bad(validate(tmp_path, f"model.name='{path}'"), 2, ("'model.name'", str(path), "config.json"))


@case("model-missing-path")
def _(tmp_path):
    path = tmp_path / "models" / "mine"
    return Bad(validate(tmp_path, f"model.name='{path}'"), 2, ("'model.name'", str(path), "no such folder"))


# --- the reward models of the RLHF methods ------------------------------------------------------

@case("reward-model-missing-folder")
def _(tmp_path):
    path = tmp_path / "rm" / "helpful"
    return Bad(validate(tmp_path, f"method='pfit' rlhf.helpfulness-model='{path}'"), 2,
               ("'rlhf.helpfulness-model'", str(path), "no such folder"))


@case("reward-model-a-file")
def _(tmp_path):
    path = write(tmp_path / "safety.safetensors", "x")
    return Bad(validate(tmp_path, f"method='rlhf-fedavg' rlhf.safety-model='{path}'"), 2,
               ("'rlhf.safety-model'", str(path), "not a model folder"))


config_case("reward-model-hub-offline", "method='rlhf-single' rlhf.safety-model='someone/safety-rm'",
            "'rlhf.safety-model' = 'someone/safety-rm'", "HF_HUB_OFFLINE")


@case("reward-models-command-missing-folder")
def _(tmp_path):
    path = tmp_path / "rm" / "safety"
    return Bad(cli(tmp_path, "reward-models", c=f"method='pfit' rlhf.safety-model='{path}'"), 2,
               ("'rlhf.safety-model'", str(path), "no such folder"))


# --- minimums against the federation -----------------------------------------------------------

config_case("minimum-min-clients", "min-clients=3", "'min-clients' = 3", "federation's 2 client(s)")
config_case("minimum-min-answers", "min-clients=1 min-answers=2 fraction-train=0.5", "'min-answers' = 2",
            "allowed: 1 to 1")


# Flower would silently sample min-clients instead of int(fraction x clients).
@case("minimum-fraction-train-below-min-clients")
def _(tmp_path):
    return Bad(validate(tmp_path, "fraction-train=0.1 min-clients=2", "--num-clients", "10"), 2,
               ("'fraction-train' = 0.1", "'min-clients' = 2", "int(0.1 x 10 clients) = 1",
                "fraction-train >= 0.2", "min-clients <= 1"))


@case("minimum-fraction-evaluate-below-min-clients")
def _(tmp_path):
    return Bad(validate(tmp_path, "fraction-evaluate=0.05 min-clients=1", "--num-clients", "10"), 2,
               ("'fraction-evaluate' = 0.05", "'min-clients' = 1", "= 0 client(s)", "fraction-evaluate >= 0.1"))


@case("minimum-min-clients-with-num-clients")
def _(tmp_path):
    return Bad(validate(tmp_path, "min-clients=5", "--num-clients", "4"), 2,
               ("'min-clients' = 5", "federation's 4 client(s)"))


# --- hardware ------------------------------------------------------------------------------------

class _NoNativeBf16:
    """Makes this machine's CPU and GPU lack native bfloat16 until released (so the case
    holds on a machine that has it)."""

    def __init__(self) -> None:
        import pfl_app.precision as precision

        self.module, self.saved = precision, precision.bf16_native
        precision.bf16_native = lambda device: False

    def release(self) -> None:
        self.module.bf16_native = self.saved


@case("hardware-precision-bf16-without-native-bf16")
def _(tmp_path):
    return Bad(cli(tmp_path, "validate", c="train.precision='bf16'"), 2,
               ("'train.precision' = 'bf16'", "no native bfloat16", "allowed here: fp32, or auto"),
               held=[_NoNativeBf16()])


@case("hardware-precision-bf16-without-native-bf16-run")
def _(tmp_path):
    return Bad(cli(tmp_path, "run", c="train.precision='bf16'"), 2,
               ("'train.precision' = 'bf16'", "no native bfloat16"), held=[_NoNativeBf16()])


# --- --resume-from -------------------------------------------------------------------------------

@case("resume-missing-folder")
def _(tmp_path):
    return Bad(resume(tmp_path / "results" / "gone"), 2, ("--resume-from", str(tmp_path / "results" / "gone"),
                                                          "no such folder"))


@case("resume-not-a-run-folder")
def _(tmp_path):
    (tmp_path / "results" / "empty").mkdir(parents=True)
    return Bad(resume(tmp_path / "results" / "empty"), 2, (str(tmp_path / "results" / "empty"), "no config.json"))


@case("resume-config-json-broken")
def _(tmp_path):
    folder = run_folder(tmp_path)
    write(folder / "config.json", '{"method": "pftt", "run_config": {')
    return Bad(resume(folder), 2, (str(folder / "config.json"), "damaged", "not valid JSON"))


@case("resume-config-json-without-run-config")
def _(tmp_path):
    folder = run_folder(tmp_path)
    write(folder / "config.json", json.dumps({"method": "pftt"}))
    return Bad(resume(folder), 2, (str(folder / "config.json"), "'run_config'"))


@case("resume-config-json-bad-value")
def _(tmp_path):
    folder = run_folder(tmp_path)
    saved = json.loads((folder / "config.json").read_text())
    saved["run_config"]["lora.r"] = 0
    write(folder / "config.json", json.dumps(saved))
    return Bad(resume(folder), 2, (str(folder / "config.json"), "this version's checks", "'lora.r' = 0"))


@case("resume-config-json-unknown-key")
def _(tmp_path):
    folder = run_folder(tmp_path)
    saved = json.loads((folder / "config.json").read_text())
    saved["run_config"]["lora.rank"] = 8  # as a run of another version might have written it
    write(folder / "config.json", json.dumps(saved))
    return Bad(resume(folder), 2, (str(folder / "config.json"), "'lora.rank'"))


@case("resume-federation-json-broken")
def _(tmp_path):
    folder = run_folder(tmp_path)
    write(folder / "federation.json", "{num-supernodes: 2")
    return Bad(resume(folder), 2, (str(folder / "federation.json"), "damaged"))


@case("resume-federation-json-bad-value")
def _(tmp_path):
    folder = run_folder(tmp_path)
    write(folder / "federation.json", json.dumps({"num-supernodes": 0}))
    return Bad(resume(folder), 2, (str(folder / "federation.json"), "num-supernodes", ">= 1"))


@case("resume-checkpoint-pointer-deleted")
def _(tmp_path):
    folder = run_folder(tmp_path, committed=2)
    (folder / "checkpoint.json").unlink()
    return Bad(resume(folder), 2,
               (str(folder / "checkpoint.json"), "is missing", "round-0002", "refusing to start over"))


@case("resume-checkpoint-pointer-damaged")
def _(tmp_path):
    folder = run_folder(tmp_path)
    write(folder / "checkpoint.json", '{"round": "one"}')
    return Bad(resume(folder), 2, (str(folder / "checkpoint.json"), "is damaged"))


@case("resume-checkpoint-beyond-rounds")
def _(tmp_path):
    folder = run_folder(tmp_path, rounds=3)
    write(folder / "checkpoint.json", json.dumps({"round": 5, "folder": "checkpoints/round-0005"}))
    return Bad(resume(folder), 2, (str(folder / "checkpoint.json"), "round 5", "num-server-rounds = 3"))


@case("resume-truncated-tensors")
def _(tmp_path):
    folder = run_folder(tmp_path, committed=1)
    tensors = folder / "checkpoints" / "round-0001" / "shared.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:20])
    return Bad(resume(folder), 2, (str(tensors), "cannot be read", "no intact checkpoint"))


@case("resume-state-json-missing")
def _(tmp_path):
    folder = run_folder(tmp_path, committed=1)
    (folder / "checkpoints" / "round-0001" / "state.json").unlink()
    return Bad(resume(folder), 2, (str(folder / "checkpoints" / "round-0001" / "state.json"), "cannot be read"))


@case("resume-summary-without-checkpoint")
def _(tmp_path):
    folder = run_folder(tmp_path, committed=0)
    write(folder / "summary.json", json.dumps({"rounds_completed": 3}))
    return Bad(resume(folder), 2, (str(folder), "summary.json but no checkpoint.json"))


@case("resume-overrides-differ")
def _(tmp_path):
    folder = run_folder(tmp_path)
    return Bad(resume(folder, "-c", "lora.r=4"), 2, (str(folder), "differs", "lora.r: 2 -> 4"))


@case("resume-num-clients-differ")
def _(tmp_path):
    folder = run_folder(tmp_path)
    return Bad(resume(folder, "--num-clients", "3"), 2,
               ("--resume-from", str(folder), "num-supernodes = 2, not 3"))


@case("resume-metrics-line-damaged")
def _(tmp_path):
    folder = run_folder(tmp_path, committed=2)
    write(folder / "metrics.jsonl", '{"round": 1, "client": 0, "status": "ok"}\n{"round": 2, "cli\n'
          '{"round": 2, "client": 1, "status": "ok"}\n')
    return Bad(resume(folder), 2, (str(folder / "metrics.jsonl"), "line 2"))


@case("resume-folder-locked")
def _(tmp_path):
    folder = run_folder(tmp_path)
    lock = RunLock(folder, LAUNCHER_LOCK, "pfl-app run")  # "another run", alive: this very process
    return Bad(resume(folder), 2, (str(folder), f"pid {os.getpid()}", "being written by another run"), held=[lock])


# --- pfl-app plot ---------------------------------------------------------------------------------

@case("plot-missing-folder")
def _(tmp_path):
    return Bad(["plot", str(tmp_path / "results" / "gone"), "-o", str(tmp_path / "plots")], 2,
               (str(tmp_path / "results" / "gone"), "no such folder"))


@case("plot-folder-without-run")
def _(tmp_path):
    (tmp_path / "results" / "empty").mkdir(parents=True)
    return Bad(["plot", str(tmp_path / "results" / "empty"), "-o", str(tmp_path / "plots")], 2,
               (str(tmp_path / "results" / "empty"), "holds no run", "metrics.jsonl"))


@case("plot-empty-metrics")
def _(tmp_path):
    write(tmp_path / "results" / "r" / "metrics.jsonl", "\n")
    return Bad(["plot", str(tmp_path / "results" / "r")], 2, (str(tmp_path / "results" / "r"), "holds no run"))


@case("plot-metrics-line-damaged")
def _(tmp_path):
    metrics = write(tmp_path / "results" / "r" / "metrics.jsonl", '{"round": 1, "client": 0}\n{"round": 2, "cli\n')
    return Bad(["plot", str(metrics.parent)], 2, (str(metrics), "line 2", "not a JSON object"))


@case("plot-summary-damaged")
def _(tmp_path):
    folder = jsonl(tmp_path / "results" / "r" / "metrics.jsonl", [{"round": 1, "client": 0}]).parent
    write(folder / "summary.json", "{")
    return Bad(["plot", str(folder)], 2, (str(folder / "summary.json"), "damaged"))


@case("plot-no-folders")
def _(tmp_path):
    return Bad(["plot"], 2, ("the following arguments are required", "runs"))


# --- grid files -------------------------------------------------------------------------------------

GRID = '[grid]\nname = "g"\nmethods = ["pftt"]\nseeds = [0]\n'


@case("grid-missing")
def _(tmp_path):
    path = tmp_path / "nope.toml"
    return Bad([str(path), "--app-dir", str(APP), "--dry-run"], 2, (str(path), "does not exist"), grid_main)


@case("grid-directory")
def _(tmp_path):
    (tmp_path / "grids").mkdir()
    return Bad([str(tmp_path / "grids"), "--app-dir", str(APP)], 2, (str(tmp_path / "grids"), "is not a file"),
               grid_main)


grid_case("toml-syntax", '[grid]\nname = "g"\nmethods = ["pftt",\n\n[federation]\n', "not valid TOML", "line")
grid_case("unknown-table", GRID + "[run_config]\nseed = 1\n", "run_config", "unknown table")
grid_case("unknown-grid-key", GRID + 'method = "pftt"\n', "unknown [grid] key", "'method'")
grid_case("grid-not-a-table", 'grid = "all"\n', "[grid] must be a table")
grid_case("federation-bad-value", GRID + "[federation]\nnum-supernodes = 0\n", "num-supernodes", ">= 1")
grid_case("federation-unknown-key", GRID + "[federation]\nclients = 4\n", "unknown [federation] key", "clients")
grid_case("unsafe-name", '[grid]\nname = "../elsewhere"\n', "[grid] name = '../elsewhere'", "folder name")
grid_case("unsafe-label", GRID + 'splits = [{label = "a/b", partitioner = "iid"}]\n', "splits[0].label = 'a/b'")
grid_case("label-with-separator", GRID + 'splits = [{label = "dir__0.5", partitioner = "iid"}]\n',
          "splits[0].label = 'dir__0.5'", "'__'")
grid_case("unlabelled-split-unsafe", GRID + 'splits = [{partition-by = "a/b"}]\n', "splits[0].label",
          "give the split a label")
grid_case("duplicate-labels", GRID + 'splits = [{label = "x", partitioner = "iid"}, {label = "x", alpha = 0.1}]\n',
          "split labels must be distinct", "'x'")
grid_case("split-not-a-table", GRID + 'splits = ["iid"]\n', "splits[0] must be a table")
grid_case("methods-not-a-list", '[grid]\nmethods = "pftt"\n', "[grid] methods must be a list")
grid_case("empty-seeds", '[grid]\nseeds = []\n', "at least one value")
grid_case("cell-bad-method", GRID.replace('["pftt"]', '["pftt", "fedavg"]'), "run fedavg__default__ideal__seed0",
          "'method' = 'fedavg'")
grid_case("cell-bad-split-key", GRID + 'splits = [{label = "s", alpha = -1.0}]\n', "run pftt__s__ideal__seed0",
          "'data.alpha' = -1.0")
grid_case("cell-bad-run-config", GRID + "[run-config]\nlora.r = 0\n", "run pftt__default__ideal__seed0", "'lora.r' = 0")
grid_case("cell-unknown-run-config-key", GRID + "[run-config]\nrounds = 3\n", "run pftt__default__ideal__seed0",
          "'rounds'")


@case("grid-cell-fails-its-checks")
def _(tmp_path):
    """A cell whose data file is missing passes the grid's own checks, and fails when its
    run is launched (before anything starts): the sweep stops with exit code 1."""
    missing = tmp_path / "gone.jsonl"
    path = write(tmp_path / "grid.toml", GRID + f'results-dir = "{tmp_path / "results"}"\n\n[run-config]\n'
                 + "".join(f"{k} = {_toml(v)}\n" for k, v in TINY.items()) + f"data.tasks = '{missing}'\n")
    return Bad([str(path), "--app-dir", str(APP)], 1,
               ("pftt__default__ideal__seed0 failed", "data.tasks", str(missing)), grid_main)


# --- the test ------------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return "".join(text.split())


class _NoGuard:
    """Stands in for :class:`pfl_app.process_guard.Guard`: starts no process."""

    def __init__(self, *_args, **_kwargs) -> None:
        pass

    def release(self) -> None:
        pass


@pytest.fixture
def nothing_starts(monkeypatch):
    """Replace what would start a simulation with a failure: no case may get that far."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the case got past every check: a simulation would have started")

    monkeypatch.setattr("pfl_app.launch.prepare_model", refuse)
    # ... and, past the checks, no guard process either (launch starts one before the model)
    monkeypatch.setattr("pfl_app.launch.Guard", _NoGuard)
    monkeypatch.setattr("pfl_app.launch.stop_token_processes", lambda _token: None)
    monkeypatch.setattr("pfl_app.launch.private_superlink", refuse)
    # pfl-app reward-models would train the embedded reward models (and importing trl takes seconds)
    stand_in = types.ModuleType("pfl_app.rlhf.prepare")
    stand_in.prepare_rlhf_models = refuse
    monkeypatch.setitem(sys.modules, "pfl_app.rlhf.prepare", stand_in)


@pytest.mark.parametrize("build", CASES)
def test_a_bad_input_stops_with_a_message_that_names_it(build, tmp_path, monkeypatch, capsys, nothing_starts):
    monkeypatch.chdir(tmp_path)  # no simulation.toml of the checkout is read by accident
    monkeypatch.syspath_prepend(str(tmp_path))  # the user packages some cases write
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bad = build(tmp_path)
    results = tmp_path / "results"
    before = set(results.rglob("*")) if results.exists() else set()
    modules = set(sys.modules)
    try:
        try:
            code = bad.entry(bad.argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    finally:
        for held in bad.held:
            held.release()
        for name in set(sys.modules) - modules:  # the user packages, so that no other case sees them
            if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
    captured = capsys.readouterr()
    out = captured.out + captured.err
    flat = " ".join(out.split())
    assert "Traceback" not in out, out
    assert code == bad.code, flat
    missing = [n for n in bad.needles if _squash(n) not in _squash(out)]
    assert not missing, f"{missing} not in: {flat}"
    if bad.code == 2:  # refused before the start: no half-made run folder is left behind
        after = set(results.rglob("*")) if results.exists() else set()
        assert not (after - before), sorted(str(p) for p in after - before)


def test_the_corpus_is_large_and_its_ids_distinct():
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(ids) >= 80
