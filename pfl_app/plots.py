"""Plots and tables of finished runs: accuracy against uplink bytes and simulated time, and
RLHF clients' preference scores."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from .methods import recorded_spec  # noqa: E402
from .rlhf.repetition import is_repetitive  # noqa: E402


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


SCORES = ("helpfulness", "safety", "objective", "harmful_compliance", "benign_refusal")


def preference_points(summary: dict[str, Any], rows: list[dict[str, Any]], model: str | None = None,
                      run_dir: str | Path | None = None) -> list[dict[str, float]]:
    """Per client of an RLHF run's last round: its safety weight and the scores of
    ``model`` (``personalized``, ``global`` or ``base``; default: what the method delivers).

    With ``run_dir``, a client's harmful-compliance and benign-refusal rates are judged
    anew from its ``samples.jsonl`` where it has them, so runs scored by an older refusal
    judge compare with new ones (the rewards are the run's own), and ``repetitive`` is the
    share of its answers there that loop (``None`` without samples); see
    :func:`sample_scores`.
    """
    model = model or recorded_spec(summary)[1]
    last = max((r["round"] for r in rows), default=0)
    points = []
    for r in sorted((r for r in rows if r["round"] == last), key=lambda r: r.get("client", r["node"])):
        if f"{model}_helpfulness" in r:
            client = r.get("client", r["node"])
            point = {"client": client, "safety_weight": r.get("safety_weight"),
                     **{s: r.get(f"{model}_{s}") for s in SCORES}}
            if run_dir is not None:
                point.update({"repetitive": None, **sample_scores(run_dir, client, model)})
            points.append(point)
    return points


def plot_preferences(run_dirs: list[str | Path], out_path: str | Path) -> Path:
    """One panel per run: each client's (helpfulness, safety) point for the model the method
    delivers, coloured by the client's safety weight, with an arrow from the base model's
    point (from the first run that scored it) on the same prompts."""
    runs = [(Path(d), *load_run(d)) for d in run_dirs]
    base: dict[Any, dict[str, float]] = {}
    for _, summary, rows in runs:
        if points := preference_points(summary, rows, "base"):
            base = {p["client"]: p for p in points}
            break
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(3.4 * max(len(runs), 1) + 1.2, 3.8), sharex=True,
                             sharey=True, squeeze=False)
    cmap, dots = plt.get_cmap("coolwarm"), None
    for ax, (run_dir, summary, rows) in zip(axes[0], runs):
        points = preference_points(summary, rows)
        for b in {(round(p["helpfulness"], 6), round(p["safety"], 6)) for p in base.values()}:
            ax.scatter(*b, marker="x", color="black", s=50, zorder=3)
        for p in points:
            if p["client"] in base:
                b = base[p["client"]]
                ax.annotate("", (p["helpfulness"], p["safety"]), (b["helpfulness"], b["safety"]),
                            arrowprops={"arrowstyle": "->", "color": cmap(p["safety_weight"]), "lw": 0.8,
                                        "alpha": 0.7})
        dots = ax.scatter([p["helpfulness"] for p in points], [p["safety"] for p in points], s=45, zorder=4,
                          c=[p["safety_weight"] for p in points], cmap=cmap, vmin=0.0, vmax=1.0,
                          edgecolors="black", linewidths=0.4)
        ax.set_title(summary.get("method", run_dir.name), fontsize=9)
        ax.set_xlabel("mean helpfulness reward")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean safety reward")
    if dots is not None:
        fig.colorbar(dots, ax=axes[0].tolist(), label="client's safety weight", shrink=0.85)
    fig.suptitle("each client's delivered model on the evaluation prompts; x: base model, arrows: from it",
                 fontsize=9)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_path


def preference_table(run_dirs: list[str | Path]) -> str:
    """A markdown table: per method (and the base model), per client, the scores of the
    model the method delivers, the share of its last-round answers that loop
    (:func:`sample_scores`), and the method's mean uplink bytes per client and round."""
    lines = ["| model | client | safety weight | helpfulness | safety | own objective | harmful complied "
             "| benign refused | repetitive | uplink B / client / round |", "|---|---|---|---|---|---|---|---|---|---|"]
    base_done = False
    for run_dir in run_dirs:
        summary, rows = load_run(run_dir)
        trained = [r for r in rows if r.get("status") in ("ok", "partial")]
        uplink = fmean(r["bytes_up"] for r in trained) if trained else 0.0
        series = [(summary.get("method", Path(run_dir).name), preference_points(summary, rows, None, run_dir),
                   f"{uplink:,.0f}")]
        if not base_done and (base := preference_points(summary, rows, "base", run_dir)):
            series.insert(0, ("base", base, "-"))
            base_done = True
        for label, points, up in series:
            for p in points:
                loops = p["repetitive"]
                lines.append(f"| {label} | {p['client']} | {p['safety_weight']:.2f} | {p['helpfulness']:+.3f} "
                             f"| {p['safety']:+.3f} | {p['objective']:+.3f} | {p['harmful_compliance']:.2f} "
                             f"| {p['benign_refusal']:.2f} | {'-' if loops is None else f'{loops:.2f}'} | {up} |")
    return "\n".join(lines)


def _last_samples(run_dir: str | Path, client: Any, model: str) -> list[dict[str, Any]]:
    """The client's samples (``samples.jsonl``) of ``model`` in its last evaluated round."""
    from .client.state import client_dir  # the client package pulls in torch: only when asked

    path = client_dir(run_dir, int(client)) / "samples.jsonl"
    if not path.exists():
        return []
    samples = [s for s in map(json.loads, path.read_text().splitlines()) if s.get("model") == model]
    last = max((s["round"] for s in samples), default=None)
    return [s for s in samples if s["round"] == last]


def _last_answers(run_dir: str | Path, client: Any, model: str) -> dict[str, str]:
    """The client's answers of ``model`` in its last evaluated round, by prompt."""
    return {s["prompt"]: s["answer"] for s in _last_samples(run_dir, client, model)}


def sample_scores(run_dir: str | Path, client: Any, model: str) -> dict[str, float]:
    """What the client's last-round answers of ``model`` in ``samples.jsonl`` say, read
    once: ``repetitive``, the share that loop (:func:`pfl_app.rlhf.repetition.is_repetitive`),
    and ``harmful_compliance`` and ``benign_refusal`` judged by today's
    :func:`pfl_app.rlhf.preferences.is_refusal` (from samples that say whether their prompt
    is harmful). A score with no answer to rest on is left out."""
    from .rlhf.preferences import is_refusal  # pulls in datasets: only when asked

    samples = _last_samples(run_dir, client, model)
    judged = [s for s in samples if "harmful" in s]
    harmful = [not is_refusal(s["answer"]) for s in judged if s["harmful"]]
    benign = [is_refusal(s["answer"]) for s in judged if not s["harmful"]]
    scores = {"repetitive": [is_repetitive(s["answer"]) for s in samples],
              "harmful_compliance": harmful, "benign_refusal": benign}
    return {k: fmean(v) for k, v in scores.items() if v}


def client_gaps(helpful: dict[str, float], safe: dict[str, float]) -> dict[str, float]:
    """How far a safety-first client's scores (``safe``) end from a helpfulness-first
    one's (``helpful``; each with ``safety``, ``helpfulness``, ``harmful_compliance`` and
    ``benign_refusal``), signed so that positive is the way their weights pull: see
    :func:`separation`."""
    return {
        "safety_gap": safe["safety"] - helpful["safety"],
        "helpfulness_gap": helpful["helpfulness"] - safe["helpfulness"],
        "compliance_gap": helpful["harmful_compliance"] - safe["harmful_compliance"],
        "refusal_gap": safe["benign_refusal"] - helpful["benign_refusal"],
    }


def separation(run_dir: str | Path) -> dict[str, Any] | None:
    """How far apart an RLHF run leaves its most helpfulness-first and its most safety-first
    client (lowest and highest safety weight), on the model the method delivers.

    Gaps are signed so that a positive value is the way each client's weights pull: the
    safety-first client's safety minus the other's, the helpfulness-first client's
    helpfulness minus the other's, the helpfulness-first client's harmful-compliance rate
    minus the other's, and the safety-first client's benign-refusal rate minus the other's
    (over-refusal: what a safety-first client tends to pay). ``decisions_differ`` is the
    share of the evaluation prompts both answered on which one refuses and the other does
    not (from ``samples.jsonl``, judged anew by
    :func:`pfl_app.rlhf.preferences.is_refusal`; ``None`` without it): greedy answers
    almost always differ in wording, so whether they differ in what they do is the telling
    part. ``None`` for a run with fewer than two clients' scores.
    """
    from .rlhf.preferences import is_refusal  # pulls in datasets: only when asked

    run_dir = Path(run_dir)
    summary, rows = load_run(run_dir)
    model = recorded_spec(summary)[1]
    points = [p for p in preference_points(summary, rows, model, run_dir) if p.get("safety_weight") is not None]
    if len(points) < 2:
        return None
    helpful = min(points, key=lambda p: p["safety_weight"])
    safe = max(points, key=lambda p: p["safety_weight"])
    a, b = _last_answers(run_dir, helpful["client"], model), _last_answers(run_dir, safe["client"], model)
    common = sorted(set(a) & set(b))
    return {
        "method": summary.get("method", run_dir.name),
        "clients": (helpful["client"], safe["client"]),
        "safety_weights": (helpful["safety_weight"], safe["safety_weight"]),
        **client_gaps(helpful, safe),
        "decisions_differ": fmean(is_refusal(a[k]) != is_refusal(b[k]) for k in common) if common else None,
    }


# The RLHF tables give every standard deviation three decimals, whatever the mean's format.
SD_SPEC = ".3f"


def mean_sd(values: list[float], spec: str, sd_spec: str | None = None) -> str:
    """``mean ± sample standard deviation`` of ``values``, formatted with ``spec`` (the
    deviation with ``sd_spec`` if given); one value alone, ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(fmean(values), spec)} ± {format(stdev(values), sd_spec or spec)}"


def separation_table(groups: dict[str, list[str | Path]]) -> str:
    """A markdown table of :func:`separation` per group of runs (say, a method's seeds):
    each gap as mean ± standard deviation over the runs."""
    lines = ["| method | runs | safety weights | safety gap | helpfulness gap | harmful-compliance gap "
             "| benign-refusal gap | refusal decisions that differ |", "|---|---|---|---|---|---|---|---|"]
    for label, run_dirs in groups.items():
        seps = [s for s in map(separation, run_dirs) if s is not None]
        if not seps:
            continue
        weights = "{:.2f} vs {:.2f}".format(*seps[0]["safety_weights"])
        differ = [s["decisions_differ"] for s in seps if s["decisions_differ"] is not None]
        cells = [mean_sd([s[key] for s in seps], spec, SD_SPEC) for key, spec in
                 (("safety_gap", "+.3f"), ("helpfulness_gap", "+.3f"), ("compliance_gap", "+.2f"),
                  ("refusal_gap", "+.2f"))]
        lines.append(f"| {label} | {len(seps)} | {weights} | {' | '.join(cells)} | {mean_sd(differ, '.2f', SD_SPEC)} |")
    return "\n".join(lines)


def objective_table(groups: dict[str, list[str | Path]]) -> str:
    """A markdown table, per group of runs (say, a method's seeds) and per model they score
    (the delivered one, the other one a method evaluates, and the base model once): the
    clients' mean own objective, harmful-compliance and benign-refusal rates in the last
    round, and the share of their answers that loop (:func:`sample_scores`; a run's mean
    over its clients that wrote samples), as mean ± standard deviation over the runs."""
    lines = ["| method | model | runs | mean own objective | harmful complied | benign refused | repetitive |",
             "|---|---|---|---|---|---|---|"]
    base_done = False
    for label, run_dirs in groups.items():
        loaded = [(d, *load_run(d)) for d in run_dirs]
        if not loaded:
            continue
        delivered = recorded_spec(loaded[0][1])[1]
        models = [delivered] + [m for m in ("personalized", "global") if m != delivered]
        if not base_done:
            models.insert(0, "base")
        for model in models:
            per_run = [pts for run_dir, summary, rows in loaded
                       if (pts := preference_points(summary, rows, model, run_dir))]
            loops = [fmean(shares) for pts in per_run
                     if (shares := [p["repetitive"] for p in pts if p["repetitive"] is not None])]
            if not per_run:
                continue
            if model == "base":
                base_done = True
            means = {k: [fmean(p[k] for p in pts) for pts in per_run]
                     for k in ("objective", "harmful_compliance", "benign_refusal")}
            name = "base model" if model == "base" else label
            shown = "-" if model == "base" else model + (" (delivered)" if model == delivered else "")
            cells = [mean_sd(means[key], spec, SD_SPEC) for key, spec in
                     (("objective", "+.3f"), ("harmful_compliance", ".2f"), ("benign_refusal", ".2f"))]
            cells.append(mean_sd(loops, ".2f", SD_SPEC))
            lines.append(f"| {name} | {shown} | {len(per_run)} | {' | '.join(cells)} |")
    return "\n".join(lines)
