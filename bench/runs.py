"""Run (or reuse) one real simulation for a benchmark: the part the trained benchmarks share.

A run whose folder already holds a complete run (:func:`pfl_app.experiments.run_problem`) is
read back instead of run again, so an interrupted benchmark resumes where it stopped; an
incomplete folder is moved aside first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pfl_app.experiments import run_problem
from pfl_app.launch import launch, load_scenario
from pfl_app.plots import load_run

ROOT = Path(__file__).resolve().parents[1]


def run_or_reuse(results_dir: Path, run_name: str, overrides: dict[str, Any], clients: int | None = None,
                 scenario: Path = ROOT / "simulation.toml") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, rows)`` of the run ``results_dir / run_name`` with ``overrides`` over the
    scenario, running it unless a complete one is there."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(results_dir) / run_name
    if complete_or_set_aside(folder):
        return load_run(folder)
    sc = load_scenario(str(scenario))
    if clients:
        sc.federation["num-supernodes"] = clients
    print(f"== {run_name} ==", flush=True)
    launch(ROOT, sc, {**overrides, "results-dir": str(results_dir), "run-name": run_name},
           echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
    return load_run(folder)


def complete_or_set_aside(folder: Path) -> bool:
    """True if ``folder`` holds a complete run (to be reused); an incomplete one is moved to
    ``<name>.incomplete`` (replacing an older one there), so the run can start afresh."""
    if not folder.exists():
        return False
    if run_problem(folder) is None:
        print(f"== {folder.name}: done before, reused ==", flush=True)
        return True
    aside = folder.with_name(folder.name + ".incomplete")
    shutil.rmtree(aside, ignore_errors=True)
    folder.rename(aside)
    return False


def delivered_share(summary: dict[str, Any]) -> str:
    """``delivered/sent`` of a run's updates."""
    total = summary["updates_delivered"] + summary["updates_lost"]
    return f"{summary['updates_delivered']}/{total}"
