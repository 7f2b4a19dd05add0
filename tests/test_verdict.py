"""Paired differences against the reference method and their bootstrap interval (pfl_app/verdict.py)."""

import json

import numpy as np
import pytest

from pfl_app.report import write_report
from pfl_app.verdict import against_reference, mean_interval, paired_differences, run_seed


def _run(root, name, scores, seed=None):
    """A finished run folder whose clients scored ``scores`` ({client: personalized accuracy})."""
    folder = root / name
    folder.mkdir(parents=True)
    per_client = {str(c): {"personalized_accuracy": a, "global_accuracy": a / 2} for c, a in scores.items()}
    (folder / "summary.json").write_text(json.dumps({
        "num_server_rounds": 1, "rounds_completed": 1, "per_client": per_client,
        "personalized_accuracy_mean": float(np.mean(list(scores.values())))}))
    rows = [{"round": 1, "node": c, "client": c, "bytes_up": 10, "bytes_down": 10, "status": "ok",
             "personalized_accuracy": a, "global_accuracy": a / 2, "simulated_time_s": 1.0}
            for c, a in scores.items()]
    (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    if seed is not None:
        (folder / "config.json").write_text(json.dumps({"run_config": {"seed": seed}}))
    return folder


def test_the_seed_comes_from_the_run_name_else_from_the_config(tmp_path):
    assert run_seed(_run(tmp_path, "pftt__iid__ideal__seed12", {0: 1.0})) == 12
    assert run_seed(_run(tmp_path, "my-run", {0: 1.0}, seed=3)) == 3


def test_clients_pair_by_id_and_seed_and_unmatched_ones_are_left_out(tmp_path):
    ours = [_run(tmp_path, "a0", {0: 0.9, 1: 0.5, 2: 0.7}, seed=0),
            _run(tmp_path, "a1", {1: 0.6, 0: 0.8}, seed=1)]
    # The reference's seed 1 lacks client 1's score; its seed 2 has no counterpart.
    ref = [_run(tmp_path, "r0", {2: 0.5, 1: 0.5, 0: 0.6}, seed=0),
           _run(tmp_path, "r1", {0: 0.7, 1: float("nan")}, seed=1),
           _run(tmp_path, "r2", {0: 0.1}, seed=2)]
    diffs, seeds = paired_differences(ours, ref, "personalized_accuracy")
    assert seeds == 2
    assert diffs == pytest.approx([0.3, 0.0, 0.2, 0.1])  # seed 0 by client id, then seed 1's client 0


def test_two_runs_of_one_seed_on_one_side_are_refused(tmp_path):
    runs = [_run(tmp_path, "a", {0: 1.0}, seed=0), _run(tmp_path, "b", {0: 1.0}, seed=0)]
    with pytest.raises(ValueError, match="two runs of seed 0"):
        paired_differences(runs, [_run(tmp_path, "r", {0: 1.0}, seed=0)], "personalized_accuracy")


def test_the_interval_holds_the_mean_and_is_the_same_each_time():
    rng = np.random.default_rng(1)
    values = list(rng.normal(0.05, 0.1, size=40))
    mean, low, high = mean_interval(values)
    assert mean == pytest.approx(np.mean(values))
    assert low < mean < high
    # about two standard errors each side
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert mean_interval(values) == (mean, low, high)


def test_the_interval_resamples_the_seeds_as_well_as_the_clients_within_them():
    # Two seeds put the method ahead, one behind, each alike over its 10 clients. The 30 pairs
    # alone look resolved (their pooled bootstrap excludes 0), but one seed in three disagrees:
    # drawing that seed three times in 27 resamples the mean to -0.1.
    by_seed = [[0.2] * 10, [0.2] * 10, [-0.1] * 10]
    mean, low, high = mean_interval(by_seed)
    assert mean == pytest.approx(0.1)
    assert low == pytest.approx(-0.1) and high == pytest.approx(0.2)
    pooled = mean_interval([v for seed in by_seed for v in seed])
    assert pooled[1] > 0  # the flat bootstrap's too-narrow interval


def test_an_interval_needs_two_values_and_collapses_when_they_agree():
    assert np.isnan(mean_interval([])[0])
    mean, low, high = mean_interval([0.25])
    assert mean == 0.25 and np.isnan(low) and np.isnan(high)
    assert mean_interval([-0.1, -0.1, -0.1]) == (-0.1, -0.1, -0.1)
    assert mean_interval([[0.3], []])[0] == 0.3 and np.isnan(mean_interval([[0.3], []])[1])


def test_each_method_is_read_against_the_reference_of_its_own_split_and_channel(tmp_path):
    for seed in (0, 1, 2):
        clients = range(6)
        _run(tmp_path, f"pftt__dir__ideal__seed{seed}", {c: 0.8 for c in clients})
        _run(tmp_path, f"fedit__dir__ideal__seed{seed}", {c: 0.8 - 0.1 - 0.01 * c for c in clients})
        _run(tmp_path, f"local-only__dir__ideal__seed{seed}", {c: 0.8 + (0.05 if c % 2 else -0.05) for c in clients})
        _run(tmp_path, f"feddpa__dir__ideal__seed{seed}", {c: 0.85 + 0.01 * c for c in clients})
        # no PFTT on this channel: nothing to pair with
        _run(tmp_path, f"fedit__dir__lte__seed{seed}", {c: 0.5 for c in clients})
    from pfl_app.report import collect

    rows = {r.method + "/" + r.channel: r for r in against_reference(collect(tmp_path))}
    assert set(rows) == {"fedit/ideal", "local-only/ideal", "feddpa/ideal"}
    fedit, local, dpa = rows["fedit/ideal"], rows["local-only/ideal"], rows["feddpa/ideal"]
    assert (fedit.seeds, fedit.pairs) == (3, 18)
    assert fedit.mean == pytest.approx(-0.125) and fedit.high < 0 and fedit.reading == "reference ahead"
    assert local.mean == pytest.approx(0.0) and local.low < 0 < local.high and local.reading == "not resolved"
    assert dpa.low > 0 and dpa.reading == "method ahead"
    text = write_report(tmp_path).read_text()
    assert "## Each method against pftt, client by client" in text
    assert "| fedit | dir | ideal | 3 | 18 | -0.125 |" in text and "reference ahead" in text
