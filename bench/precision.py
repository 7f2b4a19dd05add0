"""train.precision: fp32 against bf16 (autocast) on the default scenario's model and data.

Times, in this process and through the project's own functions, for each precision:

- a training step: :func:`pfl_app.training.train_locally` (trl's SFTTrainer, PFTT's trainable
  adapters and LoRA, ``train.batch-size`` sequences) run for ``--warmup + --steps`` steps,
  each step timed by a trainer callback; the median of the steps after the warm-up;
- an evaluation forward pass: :func:`pfl_app.tasks.evaluate` on one ``eval.batch-size``
  batch of client 0's test split (one forward pass of the model), ``--warmup`` times
  untimed, then the median of ``--repeats``.

bf16 is measured even where the pre-flight would refuse it (a device without native bfloat16
arithmetic, see pfl_app/precision.py): the figure then shows what emulated bf16 costs.
With ``--with-runs`` it also runs the scenario end to end once per precision through the
launcher (about 10 minutes each on 2 CPU cores) and reports the final mean personalized and
global accuracy; where bf16 cannot run the launcher refuses it, and the table says so.

    python bench/precision.py                          # timings only
    python bench/precision.py --steps 3 --repeats 3    # quicker, noisier
    python bench/precision.py --with-runs --json precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]

from pfl_app.config import ConfigError, parse_run_config  # noqa: E402
from pfl_app.launch import LaunchError, launch, load_scenario, parse_overrides, resolve_run_config  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def _machine() -> dict:
    import torch

    from pfl_app.precision import bf16_native, cpu_bf16_features, training_device

    device = training_device()
    return {"device": device, "cpu": torch.cpu.get_capabilities().get("cpu_name", "?"),
            "cpu_bf16_features": list(cpu_bf16_features()), "native_bf16": bf16_native(device),
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()}


def time_training_steps(cfg, bundle, data, precision: str, warmup: int, steps: int) -> list[float]:
    """Seconds of each training step after ``warmup`` ones, in ``precision``."""
    from transformers import TrainerCallback

    from pfl_app.models.personalized import TENSOR_GROUPS, set_tensors, set_trainable
    from pfl_app.training import train_locally

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    set_tensors(bundle.model, bundle.initial)  # every precision starts from the same weights
    set_trainable(bundle.model, TENSOR_GROUPS)  # PFTT's client trains the adapters and its LoRA
    timer = StepTimer()
    settings = replace(cfg.train, local_steps=warmup + steps, precision=precision)
    train_locally(bundle.model, bundle.tokenizer, data.train, settings, seed=cfg.seed,
                  max_length=cfg.model.max_length, callbacks=[timer])
    return timer.seconds[warmup:]


def time_eval_forward(cfg, bundle, data, precision: str, warmup: int, repeats: int) -> list[float]:
    """Seconds of :func:`pfl_app.tasks.evaluate` on one eval batch, after ``warmup`` untimed."""
    from pfl_app.models.personalized import set_tensors
    from pfl_app.tasks import evaluate

    batch = cfg.train.eval_batch_size
    examples = data.test.select(range(min(batch, len(data.test))))
    set_tensors(bundle.model, bundle.initial)
    out = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        evaluate(bundle.model, data.task, examples, bundle.tokenizer, batch, precision)
        if i >= warmup:
            out.append(time.perf_counter() - start)
    return out


def run_once(scenario, precision: str, tag: str, results_dir: str, extra: dict) -> dict:
    """The scenario end to end in ``precision``: its final accuracies, or why it was refused."""
    overrides = {**extra, "train.precision": precision, "run-name": f"precision-{precision}-{tag}",
                 "results-dir": results_dir}
    start = time.perf_counter()
    try:
        _, run_dir = launch(ROOT, scenario, overrides,
                            echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
    except (ConfigError, LaunchError) as err:
        return {"refused": str(err)}
    from pfl_app.plots import load_run

    summary = load_run(run_dir)[0]
    return {"run_dir": str(run_dir), "wall_s": time.perf_counter() - start,
            "personalized_accuracy": summary.get("personalized_accuracy_mean"),
            "global_accuracy": summary.get("global_accuracy_mean")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--client", type=int, default=0, help="whose data the timings use (default 0)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps / forward passes first")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per precision")
    p.add_argument("--repeats", type=int, default=10, help="timed evaluation forward passes per precision")
    p.add_argument("--with-runs", action="store_true", help="also run the scenario end to end per precision")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a run-config override for the timings and the runs, e.g. model.max-length=64 (repeatable)")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "bench"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from pfl_app.client.data import client_data
    from pfl_app.models.personalized import shared_model_bundle

    scenario = load_scenario(args.scenario)
    extra = parse_overrides(args.set)
    flat = resolve_run_config(scenario, {**extra, "results-dir": args.results_dir}, ROOT)
    cfg = parse_run_config(flat)
    num_clients = scenario.federation["num-supernodes"]
    bundle = shared_model_bundle(cfg)
    data = client_data(cfg, args.client, num_clients, bundle.tokenizer)
    figures: dict = {"machine": _machine(), "overrides": extra, "model": cfg.model.name,
                     "batch_size": cfg.train.batch_size,
                     "eval_batch_size": cfg.train.eval_batch_size, "max_length": cfg.model.max_length,
                     "precisions": {}}
    print(f"model {cfg.model.name}, client {args.client} of {num_clients} ({data.task.name}), machine "
          f"{figures['machine']}", flush=True)
    for precision in PRECISIONS:
        print(f"== {precision}: training steps ...", flush=True)
        steps = time_training_steps(cfg, bundle, data, precision, args.warmup, args.steps)
        print(f"== {precision}: evaluation forward passes ...", flush=True)
        forwards = time_eval_forward(cfg, bundle, data, precision, args.warmup, args.repeats)
        figures["precisions"][precision] = {"train_step_s": steps, "eval_forward_s": forwards,
                                            "train_step_median_s": median(steps),
                                            "eval_forward_median_s": median(forwards)}
    if args.with_runs:
        tag = f"s{cfg.seed}-{os.getpid()}"
        for precision in PRECISIONS:
            print(f"== {precision}: the scenario end to end ...", flush=True)
            figures["precisions"][precision]["run"] = run_once(scenario, precision, tag, args.results_dir, extra)

    fp32 = figures["precisions"]["fp32"]
    print()
    # speed-up: fp32's time over this precision's (above 1: faster than fp32)
    print("| precision | train step (median s) | speed-up | eval forward (median s) | speed-up |"
          + (" final pers. acc | final global acc | run wall s |" if args.with_runs else ""))
    print("|---|---|---|---|---|" + ("---|---|---|" if args.with_runs else ""))
    for precision, f in figures["precisions"].items():
        row = (f"| {precision} | {f['train_step_median_s']:.3f} | "
               f"{fp32['train_step_median_s'] / f['train_step_median_s']:.2f}x | "
               f"{f['eval_forward_median_s']:.3f} | {fp32['eval_forward_median_s'] / f['eval_forward_median_s']:.2f}x |")
        if args.with_runs:
            run = f["run"]
            if "refused" in run:
                row += f" refused: {run['refused']} | | |"
            else:
                row += f" {run['personalized_accuracy']:.3f} | {run['global_accuracy']:.3f} | {run['wall_s']:.0f} |"
        print(row)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
