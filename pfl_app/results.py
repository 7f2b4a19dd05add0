"""The results folder a run leaves behind, and its progress lines.

``results/<run-name>/`` holds ``config.json``, ``metrics.jsonl`` (a row per round per
client, appended as rounds finish, so a crash keeps every finished round),
``summary.json``, ``global_shared.safetensors`` and ``clients/client-<i>/``. The
format is described in ``docs/results-format.md``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
from rich.console import Console
from safetensors.numpy import save_file

from . import checkpoint
from .config import RunConfig
from .methods import method_label
from .privacy import privacy_summary
from .wireless.channel import round_air_time as channel_round_air_time
from .wireless.scheduling import jain_index

PEFT_PREFIX = "base_model.model."
# Evaluation results in a row start with the model they score: the client's personalized
# model, the global one, or (RLHF runs, last round) the base model.
SCORE_PREFIXES = ("personalized_", "global_", "base_")
TASK_SCORES = ("personalized_accuracy", "global_accuracy", "personalized_loss", "global_loss",
               "personalized_perplexity", "global_perplexity")
# The columns of the progress line: task tuning, and RLHF.
PROGRESS_TASK = (("train_loss", "train loss"), ("personalized_accuracy", "personalized acc"),
                 ("global_accuracy", "global acc"))
PROGRESS_RLHF = (("train_reward", "train reward"), ("personalized_helpfulness", "helpful"),
                 ("personalized_safety", "safe"), ("personalized_harmful_compliance", "harmful complied"))
_console = Console(highlight=False, soft_wrap=True)


def resolve_run_dir(cfg: RunConfig, now: datetime | None = None) -> Path:
    """``<results-dir>/<run-name>`` as an absolute path.

    A relative ``results-dir`` resolves against ``$PFL_APP_HOME`` when set (the launcher
    sets it to the project folder), else against the current directory.
    """
    base = Path(cfg.results_dir).expanduser()
    if not base.is_absolute():
        base = Path(os.environ.get("PFL_APP_HOME", os.getcwd())) / base
    name = cfg.run_name or f"{method_label(cfg.method)}-{(now or datetime.now(timezone.utc)):%Y%m%d-%H%M%S}"
    if "/" in name or name in (".", ".."):
        raise ValueError(f"run-config key 'run-name' = {name!r} must be a plain folder name")
    return base.resolve() / name


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def round_air_time(rows: list[dict[str, Any]], deadline_s: float) -> float:
    """How long a round takes in simulated time: the slowest client's downlink + simulated
    compute + uplink (lost ones included: the server waits for their attempts), cut at the
    deadline if set (``deadline_s > 0``)."""
    times = [float(r["client_time_s"]) for r in rows if isinstance(r.get("client_time_s"), (int, float))]
    return channel_round_air_time(times, deadline_s if deadline_s > 0 else None)


def client_of(rows: list[dict[str, Any]]) -> list[Any]:
    """The client each row is about, row by row.

    A reply the SuperLink writes for a node that went silent (a killed SuperNode) names
    only the node. It belongs to whichever client that node answered for earlier in the
    run; a node never seen with a client keeps its node id, so it is still counted.
    """
    known = {r["node"]: r["client"] for r in rows if "client" in r and "node" in r}
    return [r.get("client", known.get(r.get("node"), r.get("node"))) for r in rows]


def times_scheduled(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rounds each client of the run was scheduled to train in (``scheduled`` rows),
    0 for a client that only evaluated; keyed by client id as a string, in client order."""
    counts: dict[Any, int] = {}
    for client, r in zip(client_of(rows), rows):
        counts[client] = counts.get(client, 0) + (1 if r.get("scheduled") is True else 0)
    order = sorted(counts, key=lambda c: (0, c, "") if isinstance(c, int) else (1, 0, str(c)))
    return {str(c): counts[c] for c in order}


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return fmean(values) if values else None


class RunRecorder:
    """Write a run's results folder and print a line per round.

    Parameters
    ----------
    run_dir : Path
        The run's folder; it must not hold results of another run.
    cfg : RunConfig
        The validated configuration, written to ``config.json``.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig, resume: checkpoint.Checkpoint | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self._start = time.time()
        self._round_start = self._start
        if resume is not None:
            # Continue a run: keep its config.json, drop rows of the round it did not finish.
            self.rows = checkpoint.truncate_metrics(self.run_dir, resume.round)
            self.rounds_completed = resume.round
            self.simulated_time_s = float(resume.counters.get("simulated_time_s", 0.0))
            self._prior_wall = float(resume.counters.get("wall_time_s", 0.0))
            return
        if (self.run_dir / "metrics.jsonl").exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pick another run-config 'run-name' "
                "(or leave it empty for a timestamped one), or resume it with resume-from"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.rounds_completed = 0
        self.simulated_time_s = 0.0
        self._prior_wall = 0.0
        config = {"method": cfg.method, "run_dir": str(self.run_dir), "run_config": cfg.flat}
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))

    def round_done(
        self, server_round: int, rows: list[dict[str, Any]], shared: Mapping[str, np.ndarray] | None = None,
        strategy_state: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Checkpoint the round, append its rows to ``metrics.jsonl``, commit the checkpoint,
        save the round's global shared tensors and print the progress line (see
        :mod:`pfl_app.checkpoint` for why in this order)."""
        now = time.time()
        wall = now - self._round_start
        self._round_start = now
        air = round_air_time(rows, self.cfg.wireless.deadline_s)
        self.simulated_time_s += air
        rows = [{**row, "round_wall_s": round(wall, 3), "round_air_time_s": air,
                 "simulated_time_s": self.simulated_time_s} for row in rows]
        counters = {"simulated_time_s": self.simulated_time_s, "wall_time_s": self._wall()}
        checkpoint.write(self.run_dir, server_round, dict(shared or {}), dict(strategy_state or {}), counters)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=_json_default) + "\n")
        checkpoint.commit(self.run_dir, server_round)
        if shared:
            self.save_shared(shared)
        self.rows.extend(rows)
        self.rounds_completed = server_round
        # The line is about this round's own rows (eval.in-train also books the last round's scores now).
        rows = [r for r in rows if r["round"] == server_round]
        up = sum(r["bytes_up"] for r in rows)
        down = sum(r["bytes_down"] for r in rows)
        bad = sum(r.get("status") in ("error", "rejected") for r in rows)
        lost = sum(r.get("status") == "lost" for r in rows)
        scheduled = sum(r.get("scheduled") is True for r in rows)
        parts = [
            f"[bold]round {server_round}/{self.cfg.num_server_rounds}[/bold]",
            f"up {_fmt_bytes(up)}",
            f"down {_fmt_bytes(down)}",
        ]
        for key, label in PROGRESS_RLHF if self.cfg.method_spec.uses_reward_models else PROGRESS_TASK:
            value = _mean(rows, key)
            parts.append(f"{label} {value:.3f}" if value is not None else f"{label} -")
        if self.cfg.schedule.policy != "random" or self.cfg.schedule.clients_per_round:
            parts.append(f"scheduled {scheduled} of {len(rows)}")
        if lost:
            parts.append(f"[yellow]{lost} update(s) lost on the air[/yellow]")
        if bad:
            parts.append(f"[red]{bad} client(s) failed or rejected[/red]")
        parts.append(f"on air {air:.2f} s")
        parts.append(f"wall {wall:.1f} s")
        _console.print(" | ".join(parts))

    def _wall(self) -> float:
        return self._prior_wall + time.time() - self._start

    def summary(self) -> dict[str, Any]:
        """The run's headline numbers (see ``docs/results-format.md``)."""
        owner = client_of(self.rows)
        last = [(client, r) for client, r in zip(owner, self.rows) if r["round"] == self.rounds_completed]
        summary: dict[str, Any] = {
            "method": self.cfg.method,
            # What the method is, for tools that read the run where the method may not import.
            "client_kind": self.cfg.method_spec.client_kind,
            "delivered_model": self.cfg.method_spec.delivered_model,
            "model": self.cfg.model.name,
            "num_server_rounds": self.cfg.num_server_rounds,
            "rounds_completed": self.rounds_completed,
            "clients": len(set(owner)),
            "uplink_bytes_total": int(sum(r["bytes_up"] for r in self.rows)),
            "downlink_bytes_total": int(sum(r["bytes_down"] for r in self.rows)),
            "updates_delivered": sum(r.get("status") in ("ok", "partial") for r in self.rows),
            "updates_partial": sum(r.get("status") == "partial" for r in self.rows),
            "updates_lost": sum(r.get("status") == "lost" for r in self.rows),
            "updates_rejected": sum(r.get("status") == "rejected" for r in self.rows),
            # wireless.aggregation = aircomp: delivered replies whose update a deep fade kept out of the sum.
            "updates_truncated": sum(r.get("aircomp_truncated") == 1.0 for r in self.rows),
            "client_failures": sum(r.get("status") == "error" for r in self.rows),
            "wireless_profile": self.cfg.wireless.profile,
            # "": compute energy from the measured training time; else from FLOPs on this device.
            "wireless_device": self.cfg.wireless.device,
            # digital, or aircomp: the shared tensors summed on the air (air time per client, not per message).
            "wireless_aggregation": self.cfg.wireless.aggregation,
            "air_time_s_total": sum(r.get("air_time_s_up", 0.0) + r.get("air_time_s_down", 0.0) for r in self.rows),
            "energy_j_total": sum(r.get("energy_j_up", 0.0) + r.get("compute_energy_j", 0.0) for r in self.rows),
            "simulated_time_s_total": self.simulated_time_s,
            "wall_time_s": round(self._wall(), 3),
            "schedule_policy": self.cfg.schedule.policy,
            "clients_per_round": self.cfg.schedule.clients_per_round,
        }
        # compression.uplink = adaptive: how often each codec was picked (rows' uplink_codec).
        codecs = [r["uplink_codec"] for r in self.rows if r.get("uplink_codec")]
        summary["uplink_codecs"] = {c: codecs.count(c) for c in sorted(set(codecs))}
        dp = self.cfg.dp
        summary["privacy"] = privacy_summary(dp.mode, self.rows, noise_multiplier=dp.noise_multiplier,
                                             clipping_norm=dp.clipping_norm, delta=dp.delta, clipping=dp.clipping,
                                             epsilon_per_round=dp.epsilon)
        counts = times_scheduled(self.rows)
        summary["times_scheduled"] = counts
        summary["scheduling_jain_index"] = jain_index(list(counts.values())) if counts else None
        scores = sorted({k for _, r in last for k in r if k.startswith(SCORE_PREFIXES)})
        for key in sorted(set(scores) | set(TASK_SCORES)):
            summary[f"{key}_mean"] = _mean([r for _, r in last], key)
        per_client: dict[str, dict[str, Any]] = {}
        for client, r in last:
            entry = per_client.setdefault(str(client), {})
            for k in ("task", "safety_weight", *scores, *TASK_SCORES):
                # A client can have two rows in a round (its old node's error reply and its
                # restarted node's answer): a value never gives way to a missing one.
                if r.get(k) is not None or (k in TASK_SCORES and k not in entry):
                    entry[k] = r.get(k)
        summary["per_client"] = per_client
        return summary

    def save_shared(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Write ``global_shared.safetensors`` (atomically: a crash keeps the previous one).

        Tensor names lose peft's ``base_model.model.`` prefix, so they load into a base
        model with adapters inserted (:func:`pfl_app.inference.load_personalized_model`).
        """
        plain = {k.removeprefix(PEFT_PREFIX): np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        tmp = self.run_dir / "global_shared.safetensors.tmp"
        save_file(plain, str(tmp))
        tmp.replace(self.run_dir / "global_shared.safetensors")

    def round_failed(self, rows: list[dict[str, Any]]) -> None:
        """Record the rows of a round that stopped the run (too few clients answered).

        They are appended to ``metrics.jsonl`` and counted in the summary (a client that
        failed is a ``client_failures``), but the round is not completed: no checkpoint, and
        ``rounds_completed`` stays where it was (a resume drops these rows and runs it again).
        """
        if not rows:
            return
        rows = [{**row, "simulated_time_s": self.simulated_time_s} for row in rows]
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=_json_default) + "\n")
        self.rows.extend(rows)

    def finish(self, global_tensors: Mapping[str, np.ndarray], stopped: str = "",
               failed_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write the final ``global_shared.safetensors`` and ``summary.json``; return the summary.

        Parameters
        ----------
        global_tensors : mapping
            The last global shared tensors (may be empty).
        stopped : str
            Why the run ended before its last round, if it did.
        failed_rows : list of dict, optional
            The rows of the round that stopped the run (see :meth:`round_failed`;
            :class:`pfl_app.strategies.base.TooFewClients` carries them).
        """
        if stopped and failed_rows:
            self.round_failed(failed_rows)
        if global_tensors:
            self.save_shared(global_tensors)
        summary = self.summary()
        if stopped:
            summary["stopped_early"] = stopped
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        return summary
