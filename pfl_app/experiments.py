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

``name`` and the split labels become folder names: they may hold letters, digits and
``. _ = + -`` only, not start with ``.``, and not hold ``..`` (a label not ``__`` either). A
split without a label is named after its keys and values, which must then obey the same rule.

Every run is a real Flower simulation through :func:`pfl_app.launch.launch`, into
``<results-dir>/<name>/<method>__<label>__<wireless>__seed<n>/``. Only a complete run counts as
done and is skipped by a later sweep: its ``summary.json`` has ``rounds_completed`` equal to
``num_server_rounds`` and no ``stopped_early``. So an interrupted sweep resumes where it stopped,
and a cell that did not finish is run again:

- a run interrupted after at least one finished round (its folder has ``checkpoint.json``, see
  :mod:`pfl_app.checkpoint`) is continued from that round with ``resume-from``, as
  ``pfl-app run --resume-from`` would; if the launch refuses to continue it (its config or its
  checkpoint does not pass the resume checks), it is moved aside and run again;
- a run folder left half-written before its first checkpoint (no ``summary.json``) is moved aside
  as ``<run>.partial-<n>``;
- a failed run (the launch failed, or its summary says it stopped early or ran fewer rounds) is
  moved aside as ``<run>.failed-<n>``.

When a run fails, the runner prints the last lines of its log and each failing client's last
error, and writes them to ``<run>/failure.json`` (see ``docs/results-format.md``); the report lists
the run as failed, with why, and leaves it out of every mean. A failed run stops the sweep with its
error, unless ``--keep-going``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .checkpoint import POINTER as CHECKPOINT_POINTER
from .config import ConfigError, parse_run_config
from .launch import Interrupted, LaunchError, Scenario, _flatten, check_federation, launch, read_toml
from .results import client_of

GRID_KEYS = ("name", "methods", "seeds", "wireless", "splits", "results-dir")
# Run names and grid labels become folder names: a plain, portable set of characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")
SAFE_NAME_RULE = "letters, digits and . _ = + - only, not starting with '.' and without '..'"
# The file a failed run's folder gets (see docs/results-format.md).
FAILURE_FILE = "failure.json"
# How many of a run's last log lines are kept to show when it fails.
LOG_TAIL = 40
# How many failing clients the console shows (failure.json has them all), and how many of
# each one's last error lines.
SHOWN_CLIENTS = 10
SHOWN_ERROR_LINES = 2
# Colour codes of the streamed log (Flower's and Ray's), dropped from what is kept.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A run folder moved aside so its cell can run again: <run>.partial-<n> or <run>.failed-<n>.
SET_ASIDE = re.compile(r"\.(partial|failed)-\d+$")


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


def safe_name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a folder name of a run, or ``None`` if it can."""
    if not value:
        return "it is empty"
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        return f"it may hold {SAFE_NAME_RULE}"
    return None


def _check_name(path: Path, key: str, value: str, hint: str = "") -> None:
    problem = safe_name_problem(value)
    if problem is not None:
        raise ConfigError(f"{path}: {key} = {value!r} cannot be part of a folder name: {problem}{hint}")


def _split_overrides(path: Path, index: int, split: Any) -> tuple[str, dict[str, Any]]:
    where = f"[grid] splits[{index}]"
    if not isinstance(split, dict):
        raise ConfigError(f"{path}: {where} must be a table of data.* keys and a label, got {split!r}")
    split = dict(split)
    if "label" in split:
        label, hint = str(split.pop("label")), ""
    else:
        label, hint = "-".join(f"{k}{v}" for k, v in sorted(split.items())), "; give the split a label"
    _check_name(path, f"{where}.label", label, hint)
    if "__" in label:
        # The runner joins method, label, channel and seed with "__"; the report splits on it.
        raise ConfigError(f"{path}: {where}.label = {label!r} cannot hold '__' (it separates the parts of "
                          f"a run name)")
    return label, {f"data.{k}": v for k, v in split.items()}


def _table(path: Path, raw: dict[str, Any], name: str) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table, got {table!r}")
    return table


def _values(path: Path, grid: dict[str, Any], key: str, default: Any) -> list[Any]:
    values = grid.get(key, [default])
    if not isinstance(values, list):
        raise ConfigError(f"{path}: [grid] {key} must be a list, got {values!r}")
    return values


def load_grid(path: str | Path, project_dir: Path | None = None) -> Grid:
    """Read and expand a grid file; every run's config is validated here, before any runs.

    Raises
    ------
    ConfigError
        Naming the file, and the table, key or run at fault (the line, for a TOML syntax
        error).
    """
    path = Path(path)
    raw = read_toml(path, "grid file")
    unknown = sorted(set(raw) - {"grid", "federation", "run-config"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; allowed: [grid], [federation], [run-config]")
    grid = _table(path, raw, "grid")
    bad = sorted(set(grid) - set(GRID_KEYS))
    if bad:
        raise ConfigError(f"{path}: unknown [grid] key(s) {bad}; allowed: {', '.join(GRID_KEYS)}")
    fed = check_federation(raw.get("federation", {}), str(path))
    base = _flatten(_table(path, raw, "run-config"))
    methods = _values(path, grid, "methods", base.get("method", "pftt"))
    seeds = _values(path, grid, "seeds", base.get("seed", 0))
    profiles = _values(path, grid, "wireless", base.get("wireless.profile", "ideal"))
    splits = [_split_overrides(path, i, split)
              for i, split in enumerate(_values(path, grid, "splits", {"label": "default"}))]
    if not (methods and seeds and profiles and splits):
        raise ConfigError(f"{path}: methods, seeds, wireless and splits must each list at least one value")
    labels = [label for label, _ in splits]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: split labels must be distinct, got {labels}")
    name = str(grid.get("name", path.stem))
    _check_name(path, "[grid] name", name, "" if "name" in grid else " (it is the file's name; set [grid] name)")
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
            parse_run_config(overrides)  # the typed and the cross-key checks
        except ConfigError as err:
            raise ConfigError(f"{path}: run {run_name}: {err}") from err
        # Methods and profiles come from fixed lists, but the whole name is what becomes a folder.
        _check_name(path, "run name", run_name)
        runs.append(RunSpec(run_name, method, seed, label, profile, overrides))
    return Grid(name, results / name, fed, runs)


def run_problem(folder: Path) -> str | None:
    """Why the run in ``folder`` is not complete, or ``None`` if it is.

    A run is complete when its ``summary.json`` has ``rounds_completed`` equal to
    ``num_server_rounds``, no ``stopped_early``, and the runner wrote no ``failure.json``.
    """
    failure = folder / FAILURE_FILE
    if failure.exists():
        try:
            return str(json.loads(failure.read_text()).get("error") or "the run failed")
        except (json.JSONDecodeError, OSError, AttributeError):
            return f"the run failed ({FAILURE_FILE} is unreadable)"
    path = folder / "summary.json"
    if not path.exists():
        return "it has no summary.json (interrupted, or still running)"
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return "its summary.json is unreadable"
    if not isinstance(summary, dict):
        return "its summary.json is not a JSON object"
    if summary.get("stopped_early"):
        return f"stopped early: {summary['stopped_early']}"
    done, total = summary.get("rounds_completed"), summary.get("num_server_rounds")
    if not isinstance(done, int) or not isinstance(total, int):
        return "its summary.json does not say how many rounds ran"
    if done != total:
        return f"it completed {done} of {total} rounds"
    return None


def run_state(grid: Grid, run: RunSpec) -> str:
    """``done`` (complete, see :func:`run_problem`), ``failed`` (a failure file, or a summary of
    an incomplete run), ``partial`` (interrupted: no summary) or ``todo``."""
    folder = grid.results_dir / run.name
    if not folder.exists():
        return "todo"
    if (folder / FAILURE_FILE).exists() or (folder / "summary.json").exists():
        return "failed" if run_problem(folder) else "done"
    return "partial"


def _set_aside(folder: Path, kind: str = "partial") -> Path:
    for n in itertools.count(1):
        target = folder.with_name(f"{folder.name}.{kind}-{n}")
        if not target.exists():
            folder.rename(target)
            return target
    raise AssertionError("unreachable")


def _last_lines(text: str, n: int = 5) -> list[str]:
    return [line for line in str(text).splitlines() if line.strip()][-n:]


def client_errors(folder: Path) -> list[dict[str, Any]]:
    """Each failing client's last error in ``folder/metrics.jsonl``: its round, node and the
    error's last lines, client by client (a node that never named its client by node)."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    rows = [r for r in rows if isinstance(r, dict)]
    # A node that failed before it ever answered named no client (client_of falls back to
    # its node id): such an entry has client None.
    named = {r["node"] for r in rows if "client" in r and "node" in r}
    last: dict[str, dict[str, Any]] = {}
    for owner, row in zip(client_of(rows), rows):
        if row.get("status") == "error":
            client = owner if "client" in row or row.get("node") in named else None
            key = f"client {client}" if client is not None else f"node {row.get('node')}"
            last[key] = {"client": client, "node": row.get("node"), "round": row.get("round"),
                         "error": _last_lines(row.get("error", ""))}
    return list(last.values())


def record_failure(folder: Path, run: RunSpec, error: str, log_tail: list[str]) -> dict[str, Any]:
    """Write ``folder/failure.json`` (the launch's error, where the run stopped, each failing
    client's last error lines and the run's last log lines); return what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    failure: dict[str, Any] = {"run": run.name, "error": error}
    summary_path = folder / "summary.json"
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (json.JSONDecodeError, OSError):
            summary = {}
        for key in ("stopped_early", "rounds_completed", "num_server_rounds", "client_failures"):
            if key in summary:
                failure[key] = summary[key]
    failure["client_errors"] = client_errors(folder)
    failure["log_tail"] = list(log_tail)
    (folder / FAILURE_FILE).write_text(json.dumps(failure, indent=2))
    return failure


def _print_failure(console: Console, failure: dict[str, Any], folder: Path) -> None:
    if failure["log_tail"]:
        console.print(f"[red]{escape(failure['run'])}: the last lines of its log:[/red]")
        for line in failure["log_tail"]:
            console.print(line, markup=False, highlight=False)
    errors = failure["client_errors"]
    for e in errors[:SHOWN_CLIENTS]:
        who = f"client {e['client']} (node {e['node']})" if e["client"] is not None else f"node {e['node']}"
        console.print(f"[red]{escape(who)} failed in round {e['round']}:[/red]")
        for line in e["error"][-SHOWN_ERROR_LINES:]:
            console.print(f"    {line}", markup=False, highlight=False)
    if len(errors) > SHOWN_CLIENTS:
        console.print(f"... and {len(errors) - SHOWN_CLIENTS} more failing client(s)")
    if "stopped_early" in failure:
        console.print(f"stopped early: {failure['stopped_early']}", markup=False, highlight=False)
    console.print(f"[red]{escape(failure['run'])} failed:[/red] {escape(failure['error'])}")
    console.print(f"details: {escape(str(folder / FAILURE_FILE))}")


def _echo(console: Console, tail: deque[str]):
    """What launch calls with each log line: keep it (without colour codes) in ``tail``, and
    show the progress lines (``round r/n | ...``)."""
    def echo(line: str) -> None:
        tail.append(ANSI.sub("", line))
        if line.startswith("round"):
            console.print(line, markup=False, highlight=False)
    return echo


def run_grid(grid: Grid, project_dir: Path, keep_going: bool = False, console: Console | None = None,
             runner=launch) -> list[tuple[RunSpec, str]]:
    """Run every cell of the grid that is not done; return ``(run, outcome)`` pairs.

    ``runner`` is :func:`pfl_app.launch.launch` (tests pass a stand-in). A run that raises,
    or returns without a complete summary, is failed: its folder gets ``failure.json``.
    """
    console = console or Console(soft_wrap=True)
    outcomes: list[tuple[RunSpec, str]] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(grid.name, total=len(grid.runs))
        for run in grid.runs:
            folder = grid.results_dir / run.name
            state = run_state(grid, run)
            if state == "done":
                outcomes.append((run, "skipped"))
                progress.advance(task)
                continue
            overrides = run.overrides
            if state == "partial" and (folder / CHECKPOINT_POINTER).exists():
                # Rounds already paid for are kept: the launch continues the run in its folder.
                overrides = {**run.overrides, "resume-from": str(folder)}
                console.print(f"{run.name}: an interrupted run; continuing it from its last finished round")
            elif state in ("partial", "failed"):
                why = "an interrupted" if state == "partial" else f"a failed ({run_problem(folder)})"
                moved = _set_aside(folder, state)
                console.print(f"{run.name}: {escape(why)} run was moved to {moved.name}; running it again")
            progress.update(task, description=f"{grid.name}: {run.name}")
            # Everything launch echoes is kept, so a failure can show the log's end.
            tail: deque[str] = deque(maxlen=LOG_TAIL)
            try:
                try:
                    runner(project_dir, Scenario(dict(grid.federation), {}), overrides,
                           echo=_echo(console, tail))
                except ConfigError as err:
                    if "resume-from" not in overrides:
                        raise
                    # Refused before anything started: the folder cannot be continued, so it is
                    # kept aside (nothing lost) and the cell runs from the start.
                    moved = _set_aside(folder, "partial")
                    console.print(f"{run.name}: it cannot be continued ({escape(str(err))}); moved to "
                                  f"{moved.name}; running it again")
                    tail.clear()
                    runner(project_dir, Scenario(dict(grid.federation), {}), run.overrides,
                           echo=_echo(console, tail))
                problem = run_problem(folder)
                if problem is not None:
                    raise LaunchError(f"the run ended, but {problem}")
            except Interrupted:
                raise  # Ctrl-C or SIGTERM stops the sweep, --keep-going or not; the run is rerun next time
            except (LaunchError, ConfigError) as err:
                outcomes.append((run, f"failed: {err}"))
                _print_failure(console, record_failure(folder, run, str(err), list(tail)), folder)
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
    console = Console(highlight=False, soft_wrap=True)  # paths in messages stay whole
    app_dir = Path(args.app_dir).resolve()
    try:
        grid = load_grid(args.grid, app_dir)
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {escape(str(err))}")
        return 2
    if args.dry_run:
        for run in grid.runs:
            console.print(f"{run_state(grid, run):8} {run.name}")
        return 0
    failed = False
    if not args.report_only:
        try:
            outcomes = run_grid(grid, app_dir, keep_going=args.keep_going, console=console)
        except Interrupted as err:
            console.print(f"[yellow]interrupted:[/yellow] {err}; the same command continues the sweep")
            return 128 + err.signum
        except (LaunchError, ConfigError):
            return 1
        failed = any(o.startswith("failed") for _, o in outcomes)
    from .report import write_report

    report = write_report(grid.results_dir)
    console.print(f"report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
