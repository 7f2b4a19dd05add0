"""The ``pfl-app`` command: run a simulation scenario, or check one without running it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import ConfigError, parse_run_config
from .methods import method_names, method_spec, recorded_spec
from .launch import (
    Interrupted,
    LaunchError,
    Scenario,
    check_run,
    launch,
    load_scenario,
    parse_overrides,
    resolve_run_config,
    resume_scenario,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pfl-app", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run a simulation to completion"), ("validate", "check a scenario and exit"),
                       ("reward-models", "train (once) or find a scenario's two reward models and show "
                        "their held-out pairwise accuracy, and its warmed-up starting policy")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--scenario", default="simulation.toml",
                       help="scenario TOML with [federation] and [run-config] tables (default: simulation.toml)")
        s.add_argument("-c", "--run-config", action="append", default=[], metavar="'k=v ...'",
                       help="run-config overrides, TOML values: -c \"num-server-rounds=5 model.name='tiny-llama'\"")
        s.add_argument("--num-clients", type=int, help="override [federation] num-supernodes")
        s.add_argument("--app-dir", default=".", help="the Flower app folder (default: .)")
        if name == "run":
            s.add_argument("--verbose", action="store_true", help="also show library warnings from the workers")
            s.add_argument("--resume-from", metavar="RUN_DIR",
                           help="continue a crashed run from its last finished round, with its own config")
            s.add_argument("--ray-address", metavar="HOST:PORT",
                           help="run the clients on this existing Ray cluster (`ray start --head`) instead of "
                           "a local Ray instance; without it, RAY_ADDRESS is used if set")
    plot = sub.add_parser("plot", help="plot accuracy against uplink bytes and simulated time; for RLHF "
                          "runs, each client's helpfulness against safety, with a table")
    plot.add_argument("runs", nargs="+", help="results folders")
    plot.add_argument("-o", "--out", default="results/plots", help="folder for the PNG files")
    return p


def _summary_table(summary: dict) -> Table:
    t = Table(title=f"{summary['method']} on {summary['model']}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in ("rounds_completed", "clients", "uplink_bytes_total", "downlink_bytes_total",
                "personalized_accuracy_mean", "global_accuracy_mean", "updates_delivered",
                "updates_lost", "updates_rejected", "client_failures", "air_time_s_total",
                "energy_j_total", "simulated_time_s_total", "wall_time_s"):
        value = summary.get(key)
        t.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return t


def _reward_model_table(scorers) -> Table:
    """Each reward model's folder and, from the ``metrics.json`` an embedded model is saved
    with, its held-out pairwise accuracy overall and by kind of pair (blank for a model the
    user supplied without one)."""
    t = Table(title="reward models")
    for column in ("model", "path", "held-out pairs", "accuracy", "by kind"):
        t.add_column(column, overflow="fold")  # a narrow terminal wraps the path rather than cutting it
    for scorer in scorers:
        path = Path(scorer.path) / "metrics.json"
        heldout = json.loads(path.read_text()).get("heldout", {}) if path.exists() else {}
        kinds = ", ".join(f"{k.removeprefix('accuracy_')} {v:.1%}" for k, v in heldout.items()
                          if k.startswith("accuracy_"))
        t.add_row(scorer.__name__, scorer.path, str(heldout.get("pairs", "")),
                  f"{heldout['accuracy']:.1%}" if "accuracy" in heldout else "", kinds)
    return t


def check_run_folders(runs: list[str]) -> None:
    """Raise ``ConfigError`` naming the first folder that holds no run's ``metrics.jsonl``."""
    for run in runs:
        path = Path(run)
        if not path.is_dir():
            raise ConfigError(f"{run}: no such folder (pfl-app plot takes run folders, results/<run>)")
        metrics = path / "metrics.jsonl"
        if not metrics.is_file() or not metrics.read_text(errors="replace").strip():
            raise ConfigError(f"{run} holds no run: no rounds in {metrics.name} (a run folder is "
                              "results/<run-name>, with config.json and metrics.jsonl)")
        # The plots read every row and the summary as they are: a damaged line or file would
        # otherwise end the command with a JSONDecodeError traceback.
        for number, line in enumerate(metrics.read_text(errors="replace").splitlines(), start=1):
            if line.strip() and not isinstance(_json_or_none(line), dict):
                raise ConfigError(f"{metrics}, line {number}: not a JSON object (a row of a round); "
                                  "the file is damaged: remove that line, or leave the run out")
        summary = path / "summary.json"
        if summary.exists() and not isinstance(_json_or_none(summary.read_text(errors="replace")), dict):
            raise ConfigError(f"{summary} is damaged (not a JSON object); remove it to plot the run from "
                              "its metrics.jsonl alone")


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _resumed(run_dir: str, given: Scenario | None) -> tuple[Scenario, dict]:
    """The scenario and run config that continue ``run_dir``; ``given`` is the federation the
    command line asked for, if it asked for one, which must be the run's own."""
    saved_scenario, saved = resume_scenario(run_dir)
    try:
        # The run's own config alone first: a key this version no longer knows, or a value
        # it no longer allows, would otherwise be reported as if the user had typed it.
        parse_run_config(saved)
    except ConfigError as err:
        raise ConfigError(f"--resume-from: {Path(saved['resume-from']) / 'config.json'} holds a run "
                          f"config that does not pass this version's checks: {err}") from None
    if given is not None:
        differ = {k: (v, given.federation.get(k)) for k, v in saved_scenario.federation.items()
                  if given.federation.get(k, v) != v}
        if differ:
            raise ConfigError(
                f"--resume-from {run_dir}: the run ran with [federation] "
                + ", ".join(f"{k} = {old}, not {new}" for k, (old, new) in differ.items())
                + "; resume it on its own federation (leave out --num-clients and --scenario)")
    return saved_scenario, saved


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # soft_wrap: a message is never broken into lines here, so a path in it stays one piece
    # to copy (the terminal wraps it for the eye); tables still fit the width.
    console = Console(highlight=False, soft_wrap=True)
    if args.command == "plot":
        try:
            check_run_folders(args.runs)
        except ConfigError as err:
            console.print(f"[red]config error:[/red] {escape(str(err))}")
            return 2
        from .plots import load_run, plot_preferences, plot_runs, preference_table, separation_table

        rlhf = [r for r in args.runs if recorded_spec(load_run(r)[0])[0] == "rlhf"]
        task = [r for r in args.runs if r not in rlhf]
        paths = plot_runs(task, args.out) if task else []
        if rlhf:
            paths.append(plot_preferences(rlhf, Path(args.out) / "helpfulness_vs_safety.png"))
            console.print(preference_table(rlhf))
            console.print(separation_table({str(r): [r] for r in rlhf}))
        for path in paths:
            console.print(f"wrote {path}")
        return 0
    try:
        explicit_scenario = args.scenario != "simulation.toml"
        scenario = load_scenario(args.scenario if Path(args.scenario).exists() or explicit_scenario else None)
        if args.num_clients is not None:
            if args.num_clients < 1:
                raise ConfigError("--num-clients must be >= 1")
            scenario.federation["num-supernodes"] = args.num_clients
        overrides = parse_overrides(args.run_config)
        app_dir = Path(args.app_dir).resolve()
        if not app_dir.exists():
            # "not a Flower app folder" would send the user looking inside a folder that is not there.
            raise ConfigError(f"--app-dir {app_dir}: no such folder")
        if not app_dir.is_dir() or not (app_dir / "pyproject.toml").is_file():
            raise ConfigError(f"--app-dir {app_dir} is not a Flower app folder (no pyproject.toml there)")
        if getattr(args, "resume_from", None):
            given = scenario if args.num_clients is not None or explicit_scenario else None
            scenario, saved = _resumed(args.resume_from, given)
            overrides = {**saved, **overrides}
        if args.command == "validate":
            flat = resolve_run_config(scenario, overrides, app_dir)
            check_run(scenario, flat)
            console.print_json(json.dumps({"federation": scenario.federation, "run-config": flat}))
            return 0
        if args.command == "reward-models":
            cfg = parse_run_config(resolve_run_config(scenario, overrides, app_dir))
            if not cfg.method_spec.uses_reward_models:
                rlhf = [m for m in method_names() if method_spec(m).uses_reward_models]
                raise ConfigError(f"run-config key 'method' = {cfg.method!r} uses no reward models; "
                                  f"the methods that do: {', '.join(rlhf)}")
            from .preflight import check_reward_models

            check_reward_models(cfg)  # before an embedded one is trained for minutes
            from .rlhf.prepare import prepare_rlhf_models  # loads trl: only when asked

            console.print("loading the reward models and the starting policy; an embedded one not cached yet "
                          "is trained first (minutes each on 2 CPU cores, once)")
            models = prepare_rlhf_models(cfg)
            console.print(_reward_model_table(models.scorers))
            console.print(f"starting policy: {models.policy}")
            return 0
        echo = lambda line: console.print(line, markup=False)  # noqa: E731
        _, run_dir = launch(app_dir, scenario, overrides, echo=echo, verbose=args.verbose,
                           ray_address=args.ray_address)
    except ConfigError as err:
        # escape: user text such as "[federation]" is not rich markup
        console.print(f"[red]config error:[/red] {escape(str(err))}")
        return 2
    except Interrupted as err:
        console.print(f"[yellow]interrupted:[/yellow] {escape(str(err))}; every process of the run was stopped, "
                      "and its folder keeps every finished round (pfl-app run --resume-from continues it)")
        return 128 + err.signum
    except LaunchError as err:
        console.print(f"[red]run failed:[/red] {escape(str(err))}")
        return 1
    summary = json.loads((run_dir / "summary.json").read_text())
    console.print(_summary_table(summary))
    console.print(f"results: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
