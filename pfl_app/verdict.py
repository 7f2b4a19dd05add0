"""Each method against a reference method, client by client: paired differences and a bootstrap interval.

Two runs of a sweep that differ only by method share their seed, split and channel, so a client
holds the same data in both: the difference of that client's final score between a method and the
reference is one paired observation. The pairs of every seed the two have in common are pooled, and
the 95 % interval of their mean is a two-stage (cluster) percentile bootstrap: the seeds are
resampled with replacement, then the clients within each drawn seed. The clients of one seed share
one training run, so they are not independent, and resampling the pooled pairs alone would give an
interval too narrow. Pairing removes what the seed and the client's data do to both methods alike,
which is most of the spread of an unpaired comparison on a small federation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# (method, split, channel), as pfl_app.report groups runs.
GroupKey = tuple[str, str, str]


@dataclass(frozen=True)
class PairedDifference:
    """A method's mean paired difference from the reference, with its bootstrap interval.

    Attributes
    ----------
    method, split, channel : str
        The group compared (the reference shares its split and channel).
    seeds : int
        Seeds both methods finished.
    pairs : int
        (seed, client) pairs: clients scored in both runs of a seed.
    mean : float
        Mean of ``method - reference`` over the pairs.
    low, high : float
        The bootstrap interval of that mean; ``nan`` with fewer than two pairs.
    """

    method: str
    split: str
    channel: str
    seeds: int
    pairs: int
    mean: float
    low: float
    high: float

    @property
    def reading(self) -> str:
        """Which side the interval puts ahead, or that it cannot tell."""
        if not np.isfinite(self.low):
            return "too few pairs"
        if self.high < 0:
            return "reference ahead"
        if self.low > 0:
            return "method ahead"
        return "not resolved"


def run_seed(run_dir: Path) -> int:
    """The seed of a run: from the runner's run name (``...__seed<n>``), else its ``config.json``."""
    run_dir = Path(run_dir)
    last = run_dir.name.split("__")[-1]
    if last.startswith("seed") and last[4:].isdigit():
        return int(last[4:])
    return int(json.loads((run_dir / "config.json").read_text())["run_config"]["seed"])


def client_scores(run_dir: Path, metric: str) -> dict[str, float]:
    """Each client's final ``metric`` (``summary.json``'s ``per_client``); clients without a
    finite value are left out."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    scores = {}
    for client, entry in summary.get("per_client", {}).items():
        value = entry.get(metric)
        if isinstance(value, (int, float)) and np.isfinite(value):
            scores[str(client)] = float(value)
    return scores


def paired_differences(runs: Iterable[Path], reference_runs: Iterable[Path], metric: str) -> tuple[list[float], int]:
    """``method - reference`` of every client scored in both runs of a seed, over the seeds both
    finished (by seed, then client id), and how many seeds that is.

    Raises
    ------
    ValueError
        If one side has two runs of the same seed (the pairing would be ambiguous).
    """
    by_seed = paired_differences_by_seed(runs, reference_runs, metric)
    return [d for seed in sorted(by_seed) for d in by_seed[seed]], len(by_seed)


def paired_differences_by_seed(runs: Iterable[Path], reference_runs: Iterable[Path],
                               metric: str) -> dict[int, list[float]]:
    """``method - reference`` of every client scored in both runs of a seed (by client id), for
    each seed both finished.

    Raises
    ------
    ValueError
        If one side has two runs of the same seed (the pairing would be ambiguous).
    """
    def by_seed(dirs: Iterable[Path]) -> dict[int, Path]:
        out: dict[int, Path] = {}
        for d in dirs:
            seed = run_seed(d)
            if seed in out:
                raise ValueError(f"two runs of seed {seed} in one group: {out[seed]} and {d}")
            out[seed] = Path(d)
        return out

    ours, theirs = by_seed(runs), by_seed(reference_runs)
    out = {}
    for seed in sorted(set(ours) & set(theirs)):
        a, b = client_scores(ours[seed], metric), client_scores(theirs[seed], metric)
        if diffs := [a[c] - b[c] for c in sorted(set(a) & set(b))]:
            out[seed] = diffs
    return out


def mean_interval(values: Sequence[float] | Sequence[Sequence[float]], confidence: float = 0.95,
                  resamples: int = 9999, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of the pooled values and its two-stage percentile-bootstrap
    interval.

    ``values`` is a list of clusters (one a seed: that seed's paired differences), or a flat list,
    taken as one cluster. Each resample draws as many clusters as there are, with replacement,
    then within each drawn cluster as many values as it holds, with replacement, and takes the
    mean of all it drew (seeded: a report is the same each time it is rebuilt). With one cluster
    this is the ordinary bootstrap of the values. ``low`` and ``high`` are ``nan`` with fewer than
    two values.
    """
    # By hand: scipy.stats.bootstrap resamples independent observations only, and no
    # well-kept library this project uses resamples clusters and the values within them.
    if len(values) and np.ndim(values[0]) == 0:
        values = [values]
    clusters = [np.asarray(c, dtype=float) for c in values if len(c)]
    if not clusters:
        return float("nan"), float("nan"), float("nan")
    data = np.concatenate(clusters)
    if len(data) < 2:
        return float(data.mean()), float("nan"), float("nan")
    if np.all(data == data[0]):
        return float(data[0]), float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        drawn = [clusters[i] for i in rng.integers(len(clusters), size=len(clusters))]
        means[b] = np.concatenate([c[rng.integers(len(c), size=len(c))] for c in drawn]).mean()
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(data.mean()), float(low), float(high)


def against_reference(groups: Mapping[GroupKey, list[Path]], reference: str = "pftt",
                      metric: str = "personalized_accuracy") -> list[PairedDifference]:
    """A :class:`PairedDifference` for every group with at least one client paired with the
    reference method's run of the same split, channel and seed, in the groups' order; the
    reference's own groups are left out."""
    out = []
    for (method, split, channel), runs in sorted(groups.items()):
        ref = groups.get((reference, split, channel))
        if method == reference or not ref:
            continue
        by_seed = paired_differences_by_seed(runs, ref, metric)
        if not by_seed:
            continue
        clusters = [by_seed[s] for s in sorted(by_seed)]
        mean, low, high = mean_interval(clusters)
        out.append(PairedDifference(method, split, channel, len(by_seed), sum(map(len, clusters)), mean, low, high))
    return out


def markdown_table(rows: list[PairedDifference], reference: str, metric: str) -> str:
    """The paired differences as a markdown table, one row a method, split and channel."""
    label = metric.replace("_", " ")
    lines = [f"| method | split | channel | seeds | pairs | mean {label} - {reference} | 95 % interval | reading |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = f"[{r.low:+.3f}, {r.high:+.3f}]" if np.isfinite(r.low) else "-"
        lines.append(f"| {r.method} | {r.split} | {r.channel} | {r.seeds} | {r.pairs} | {r.mean:+.3f} | "
                     f"{interval} | {r.reading} |")
    return "\n".join(lines)
