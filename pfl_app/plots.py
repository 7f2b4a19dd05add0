"""Plots of finished runs: accuracy against uplink bytes and against simulated time."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, rows)`` of a results folder."""
    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return summary, rows


def round_curve(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per round: cumulative uplink bytes, cumulative simulated time, mean accuracies."""
    out, uplink, sim_time = [], 0, 0.0
    for rnd in sorted({r["round"] for r in rows}):
        these = [r for r in rows if r["round"] == rnd]
        uplink += sum(r["bytes_up"] for r in these)
        sim_time = max((r.get("simulated_time_s", sim_time) for r in these), default=sim_time)
        scores = [r["personalized_accuracy"] for r in these if isinstance(r.get("personalized_accuracy"), float)]
        glob = [r["global_accuracy"] for r in these if isinstance(r.get("global_accuracy"), float)]
        out.append({
            "round": rnd,
            "uplink_bytes": uplink,
            "simulated_time_s": sim_time,
            "personalized_accuracy": fmean(scores) if scores else float("nan"),
            "global_accuracy": fmean(glob) if glob else float("nan"),
        })
    return out


def _label(summary: dict[str, Any], run_dir: Path) -> str:
    if not summary:
        return run_dir.name
    profile = summary.get("wireless_profile")
    return f"{summary['method']} ({profile})" if profile and profile != "ideal" else summary["method"]


def plot_runs(run_dirs: list[str | Path], out_dir: str | Path) -> list[Path]:
    """Write ``accuracy_vs_uplink.png`` and ``accuracy_vs_time.png`` for the given runs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(Path(d), *load_run(d)) for d in run_dirs]
    written = []
    for x_key, x_label, name in (
        ("uplink_bytes", "cumulative uplink (MB)", "accuracy_vs_uplink.png"),
        ("simulated_time_s", "cumulative simulated time on the air (s)", "accuracy_vs_time.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for run_dir, summary, rows in runs:
            curve = round_curve(rows)
            xs = [p[x_key] / (1e6 if x_key == "uplink_bytes" else 1.0) for p in curve]
            line, = ax.plot(xs, [p["personalized_accuracy"] for p in curve], marker="o",
                            label=f"{_label(summary, run_dir)} personalized")
            ax.plot(xs, [p["global_accuracy"] for p in curve], marker="x", linestyle="--",
                    color=line.get_color(), label=f"{_label(summary, run_dir)} global")
        ax.set_xlabel(x_label)
        ax.set_ylabel("mean client accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
