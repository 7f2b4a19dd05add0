"""The report of a sweep: a markdown table over seeds, and plots.

Reads every complete run under a results folder (see :func:`pfl_app.experiments.run_problem`),
groups runs that differ only by seed, and writes ``report/report.md`` and PNG plots beside it.
Failed runs (a ``failure.json``, or a ``summary.json`` of a run that stopped early) are listed
with why, and left out of every mean and plot.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .experiments import FAILURE_FILE, SET_ASIDE, run_problem  # noqa: E402
from .methods import recorded_spec  # noqa: E402
from . import verdict  # noqa: E402
from .plots import (  # noqa: E402
    load_run,
    mean_sd,
    objective_table,
    plot_preferences,
    preference_table,
    round_curve,
    separation_table,
)

# The method every other one is compared with, client by client, and on which score.
REFERENCE = "pftt"
PAIRED_METRIC = "personalized_accuracy"

COLUMNS = (
    ("personalized_accuracy_mean", "personalized acc", 1.0, ".3f"),
    ("global_accuracy_mean", "global acc", 1.0, ".3f"),
    ("uplink_bytes_total", "uplink (MB)", 1e-6, ".1f"),
    ("simulated_time_s_total", "time on air (s)", 1.0, ".1f"),
    ("energy_j_total", "energy (J)", 1.0, ".0f"),
    ("updates_lost", "updates lost", 1.0, ".1f"),
    ("wall_time_s", "wall (s)", 1.0, ".0f"),
)


def group_key(run_dir: Path) -> tuple[str, str, str]:
    """``(method, split, channel)`` of a run: from the runner's run name
    ``<method>__<split>__<channel>__seed<n>``, else from its config."""
    parts = run_dir.name.split("__")
    if len(parts) == 4 and parts[3].startswith("seed"):
        return parts[0], parts[1], parts[2]
    cfg = json.loads((run_dir / "config.json").read_text())["run_config"]
    split = cfg["data.partitioner"] + (f"{cfg['data.alpha']:g}" if cfg["data.partitioner"] == "dirichlet" else "")
    return cfg["method"], split, cfg["wireless.profile"]


def collect(results_dir: str | Path) -> dict[tuple[str, str, str], list[Path]]:
    """Complete runs under ``results_dir``, grouped by :func:`group_key`."""
    groups: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for summary in sorted(Path(results_dir).glob("*/summary.json")):
        run = summary.parent
        if SET_ASIDE.search(run.name) or run_problem(run) is not None:
            continue
        groups[group_key(run)].append(run)
    return dict(groups)


def failed_runs(results_dir: str | Path) -> list[tuple[Path, str]]:
    """``(run folder, why)`` of each failed run under ``results_dir``: one with a
    ``failure.json``, or whose ``summary.json`` is of an incomplete run. Folders moved aside
    for a rerun, and runs with neither file (under way, or interrupted), are not listed."""
    failed: list[tuple[Path, str]] = []
    if not Path(results_dir).is_dir():
        return failed
    for run in sorted(p for p in Path(results_dir).iterdir() if p.is_dir()):
        if SET_ASIDE.search(run.name):
            continue
        if (run / FAILURE_FILE).exists() or (run / "summary.json").exists():
            why = run_problem(run)
            if why is not None:
                failed.append((run, why))
    return failed


def failed_list(failed: list[tuple[Path, str]]) -> list[str]:
    """Markdown lines naming each failed run and why."""
    lines = ["## Failed runs (left out of every mean and plot)", ""]
    for run, why in failed:
        # The first line says why; tracebacks stay in the run's failure.json.
        first = why.strip().splitlines()[0] if why.strip() else "failed"
        lines.append(f"- `{run.name}`: failed: {first}")
    return lines + [""]


def _cell(values: list[float], scale: float, spec: str) -> str:
    return mean_sd([v * scale for v in values if isinstance(v, (int, float))], spec)


def markdown_table(groups: dict[tuple[str, str, str], list[Path]]) -> str:
    """Mean ± standard deviation over seeds of each group's headline numbers."""
    header = "| method | split | channel | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (4 + len(COLUMNS))]
    for (method, split, channel), runs in sorted(groups.items()):
        summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
        cells = [_cell([s.get(key) for s in summaries], scale, fmt) for key, _, scale, fmt in COLUMNS]
        lines.append(f"| {method} | {split} | {channel} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_curve(runs: list[Path]) -> list[dict[str, float]]:
    curves = [round_curve(load_run(r)[1]) for r in runs]
    rounds = min(len(c) for c in curves)
    return [{k: fmean(c[i][k] for c in curves) for k in curves[0][i]} for i in range(rounds)]


def plot_report(groups: dict[tuple[str, str, str], list[Path]], out_dir: Path) -> list[Path]:
    """Accuracy against round, cumulative uplink and simulated time (mean over seeds), and the
    spread of per-client personalized accuracy in the last round."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for x_key, x_label, scale, name in (
        ("round", "round", 1.0, "accuracy_vs_round.png"),
        ("uplink_bytes", "cumulative uplink (MB)", 1e-6, "accuracy_vs_uplink.png"),
        ("simulated_time_s", "cumulative simulated time on the air (s)", 1.0, "accuracy_vs_time.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (method, split, channel), runs in sorted(groups.items()):
            curve = _mean_curve(runs)
            ax.plot([p[x_key] * scale for p in curve], [p["personalized_accuracy"] for p in curve],
                    marker="o", label=f"{method} / {split} / {channel}")
        ax.set_xlabel(x_label)
        ax.set_ylabel("mean personalized accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups)), 4.5))
    labels, data = [], []
    for key, runs in sorted(groups.items()):
        per_client = []
        for run in runs:
            rows = load_run(run)[1]
            last = max(r["round"] for r in rows)
            per_client += [r["personalized_accuracy"] for r in rows
                           if r["round"] == last and isinstance(r.get("personalized_accuracy"), float)]
        labels.append("\n".join(key))
        data.append(per_client or [float("nan")])
    ax.boxplot(data, tick_labels=labels)
    ax.set_ylabel("per-client personalized accuracy (last round)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "client_accuracy_spread.png", dpi=110)
    plt.close(fig)
    written.append(out_dir / "client_accuracy_spread.png")
    return written


def write_report(results_dir: str | Path) -> Path:
    """Write ``<results_dir>/report/report.md`` and its plots; return the markdown's path."""
    results_dir = Path(results_dir)
    groups = collect(results_dir)
    failed = failed_runs(results_dir)
    out = results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Report: {results_dir.name}", ""]
    if failed:
        lines += failed_list(failed)
    if not groups:
        lines.append("No finished runs yet.")
    rlhf = {k: v for k, v in groups.items()
            if recorded_spec(json.loads((v[0] / "summary.json").read_text()))[0] == "rlhf"}
    task = {k: v for k, v in groups.items() if k not in rlhf}
    if task:
        lines += [markdown_table(task), "",
                  "Mean ± standard deviation over seeds. Accuracies are the clients' mean in the last round.", ""]
        for path in plot_report(task, out):
            lines.append(f"![{path.stem}]({path.name})")
        paired = verdict.against_reference(task, REFERENCE, PAIRED_METRIC)
        if paired:
            lines += ["", f"## Each method against {REFERENCE}, client by client", "",
                      verdict.markdown_table(paired, REFERENCE, PAIRED_METRIC), "",
                      f"A pair is one client of one seed, scored in both runs (same data, same split and channel). "
                      f"The interval is the 95 % percentile bootstrap of the pairs' mean, resampling the seeds and then "
                      f"the clients within each (pfl_app/verdict.py); "
                      f"'reference ahead' means it lies below 0, so {REFERENCE} did better.", ""]
    if rlhf:
        # Per-client points do not average over seeds: show the first seed of each group.
        firsts = [sorted(runs)[0] for _, runs in sorted(rlhf.items())]
        named = {" / ".join(key): sorted(runs) for key, runs in sorted(rlhf.items())}
        path = plot_preferences(firsts, out / "helpfulness_vs_safety.png")
        lines += ["", "## RLHF: each client's delivered model (first seed of each group)", "",
                  preference_table(firsts), "", f"![{path.stem}]({path.name})", "",
                  "## RLHF: how far apart the helpfulness-first and the safety-first client end up", "",
                  separation_table(named), "",
                  "Positive gaps point the way each client's weights pull. Every client answers the same "
                  "evaluation prompts; the last column is the share of them the two answer differently.", "",
                  "## RLHF: the clients' mean own objective (mean ± standard deviation over seeds)", "",
                  objective_table(named), ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
