"""The experiment runner: methods x seeds x data splits x wireless profiles, then a report.

    python -m pfl_app.experiments grid.toml            # run what is missing, then report
    python -m pfl_app.experiments grid.toml --report-only

A grid file::

    [grid]
    name = "baselines"                  # results go to <results-dir>/<name>/
    methods = ["pftt", "fedit", "local-only"]
    seeds = [0, 1, 2]
    wireless = ["ideal", "lte-cell-edge"]
    # each split is a table of data.* keys (without the prefix) and a label
    splits = [{label = "dir0.5", partitioner = "dirichlet", alpha = 0.5}]

    [federation]                        # as in a scenario file
    num-supernodes = 4

    [run-config]                        # overrides shared by every run
    num-server-rounds = 3

Every run is a real Flower simulation through :func:`pfl_app.launch.launch`. A run whose
``summary.json`` exists is skipped, so an interrupted sweep resumes where it stopped; a
run folder left half-written by an interruption is moved aside (``<run>.partial-<n>``) and
run again. A failed run stops the sweep with its error, unless ``--keep-going``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .config import ConfigError, validate_flat
from .launch import FEDERATION_KEYS, LaunchError, Scenario, _flatten, launch

GRID_KEYS = ("name", "methods", "seeds", "wireless", "splits", "results-dir")


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid."""

    name: str
    method: str
    seed: int
    split: str
    wireless: str
    overrides: dict[str, Any] = field(hash=False, compare=False)


@dataclass
class Grid:
    name: str
    results_dir: Path
    federation: dict[str, int]
    runs: list[RunSpec]


def _split_overrides(split: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    split = dict(split)
    label = str(split.pop("label", "")) or "-".join(f"{k}{v}" for k, v in sorted(split.items()))
    return label, {f"data.{k}": v for k, v in split.items()}


def load_grid(path: str | Path, project_dir: Path | None = None) -> Grid:
    """Read and expand a grid file; every run's config is validated here, before any runs.

    Raises
    ------
    ConfigError
        Naming the table, key or run at fault.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"grid file {path} does not exist")
    raw = tomllib.loads(path.read_text())
    unknown = sorted(set(raw) - {"grid", "federation", "run-config"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; allowed: [grid], [federation], [run-config]")
    grid = raw.get("grid", {})
    bad = sorted(set(grid) - set(GRID_KEYS))
    if bad:
        raise ConfigError(f"{path}: unknown [grid] key(s) {bad}; allowed: {', '.join(GRID_KEYS)}")
    fed = {"num-supernodes": 2, **raw.get("federation", {})}
    bad = sorted(set(fed) - set(FEDERATION_KEYS))
    if bad:
        raise ConfigError(f"{path}: unknown [federation] key(s) {bad}; allowed: {', '.join(FEDERATION_KEYS)}")
    base = _flatten(raw.get("run-config", {}))
    methods = list(grid.get("methods", [base.get("method", "pftt")]))
    seeds = list(grid.get("seeds", [base.get("seed", 0)]))
    profiles = list(grid.get("wireless", [base.get("wireless.profile", "ideal")]))
    splits = [_split_overrides(s) for s in grid.get("splits", [{"label": "default"}])]
    if not (methods and seeds and profiles and splits):
        raise ConfigError(f"{path}: methods, seeds, wireless and splits must each list at least one value")
    labels = [label for label, _ in splits]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: split labels must be distinct, got {labels}")
    name = str(grid.get("name", path.stem))
    results = Path(grid.get("results-dir", "results")).expanduser()
    if not results.is_absolute():
        results = (project_dir or path.parent).resolve() / results
    runs = []
    # Seed outermost: a sweep cut short still has every method on the first seeds.
    for seed, (label, split), profile, method in itertools.product(seeds, splits, profiles, methods):
        run_name = f"{method}__{label}__{profile}__seed{seed}"
        overrides = {**base, **split, "method": method, "seed": seed, "wireless.profile": profile,
                     "run-name": run_name, "results-dir": str(results / name)}
        try:
            validate_flat(overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: run {run_name}: {err}") from err
        runs.append(RunSpec(run_name, method, seed, label, profile, overrides))
    return Grid(name, results / name, fed, runs)


def run_state(grid: Grid, run: RunSpec) -> str:
    """``done`` (has a summary), ``partial`` (interrupted) or ``todo``."""
    folder = grid.results_dir / run.name
    if (folder / "summary.json").exists():
        return "done"
    return "partial" if folder.exists() else "todo"


def _set_aside(folder: Path) -> Path:
    for n in itertools.count(1):
        target = folder.with_name(f"{folder.name}.partial-{n}")
        if not target.exists():
            folder.rename(target)
            return target
    raise AssertionError("unreachable")


def run_grid(grid: Grid, project_dir: Path, keep_going: bool = False, console: Console | None = None,
             runner=launch) -> list[tuple[RunSpec, str]]:
    """Run every missing cell of the grid; return ``(run, outcome)`` pairs.

    ``runner`` is :func:`pfl_app.launch.launch` (tests pass a stand-in).
    """
    console = console or Console()
    outcomes: list[tuple[RunSpec, str]] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(grid.name, total=len(grid.runs))
        for run in grid.runs:
            state = run_state(grid, run)
            if state == "done":
                outcomes.append((run, "skipped"))
                progress.advance(task)
                continue
            if state == "partial":
                moved = _set_aside(grid.results_dir / run.name)
                console.print(f"{run.name}: an interrupted run was moved to {moved.name}; running it again")
            progress.update(task, description=f"{grid.name}: {run.name}")
            try:
                runner(project_dir, Scenario(dict(grid.federation), {}), run.overrides,
                       echo=lambda line: console.print(line, markup=False, highlight=False)
                       if line.startswith("round") else None)
            except (LaunchError, ConfigError) as err:
                outcomes.append((run, f"failed: {err}"))
                console.print(f"[red]{run.name} failed:[/red] {err}")
                if not keep_going:
                    raise
            else:
                outcomes.append((run, "ran"))
            progress.advance(task)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pfl_app.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", help="grid TOML file")
    p.add_argument("--app-dir", default=".", help="the Flower app folder (default: .)")
    p.add_argument("--keep-going", action="store_true", help="go on after a failed run")
    p.add_argument("--report-only", action="store_true", help="only write the report of what exists")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    args = p.parse_args(argv)
    console = Console(highlight=False)
    app_dir = Path(args.app_dir).resolve()
    try:
        grid = load_grid(args.grid, app_dir)
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {err}")
        return 2
    if args.dry_run:
        for run in grid.runs:
            console.print(f"{run_state(grid, run):8} {run.name}")
        return 0
    failed = False
    if not args.report_only:
        try:
            outcomes = run_grid(grid, app_dir, keep_going=args.keep_going, console=console)
        except (LaunchError, ConfigError):
            return 1
        failed = any(o.startswith("failed") for _, o in outcomes)
    from .report import write_report

    report = write_report(grid.results_dir)
    console.print(f"report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
