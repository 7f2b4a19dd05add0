"""Where trl's step time goes: one batch of the default run, forward and backward, three ways.

Plain torch (the model's own logits and cross-entropy); the trainer ``pfl_app.training`` builds
(trl's SFTTrainer, its loss taken as transformers' ``Trainer.compute_loss`` takes it); and trl's own
``SFTTrainer.compute_loss`` on that trainer (trl patches the model with a fused LM head that also
computes log-probs, entropy and top-1 accuracy every step). The same model, adapters and batch
(client 0's first ``train.batch-size`` examples); the minimum of 3 timings after a warm-up, each
ratio to plain torch. No optimizer step. Run it on a quiet machine; ``THREADS`` sets torch's threads
(default 1).

    THREADS=2 python bench/trl_step.py
"""
import os, time, tempfile
os.environ["HF_HUB_OFFLINE"] = "1"
from pathlib import Path
import torch
from pfl_app.launch import load_scenario, resolve_run_config
from pfl_app.config import parse_run_config
from pfl_app.models.personalized import shared_model_bundle, set_trainable, TENSOR_GROUPS
from pfl_app.client.data import client_data
from pfl_app.tasks import _pad
from pfl_app.training import ProximalSFTTrainer, local_run_args
from trl import SFTConfig, SFTTrainer
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
sc = load_scenario("simulation.toml")
cfg = parse_run_config(resolve_run_config(sc, {"wireless.profile": "ideal"}, Path(".")))
b = shared_model_bundle(cfg)
data = client_data(cfg, 0, 4, b.tokenizer)
set_trainable(b.model, TENSOR_GROUPS)
batch = data.train.select(range(cfg.train.batch_size))
ids = _pad(batch["input_ids"], b.tokenizer.pad_token_id)
labels = torch.where(_pad(batch["completion_mask"], 0).bool(), ids, torch.full_like(ids, -100))
attn = _pad([[1] * len(s) for s in batch["input_ids"]], 0)
model = b.model
model.train()
def plain():
    loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
    loss.backward(); model.zero_grad(set_to_none=True)
base = {}
def timeit(name, f, kind):
    f()
    ts = []
    for _ in range(3):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ratio = f", {min(ts) / base[kind]:.2f}x plain" if kind in base else ""
    base.setdefault(kind, min(ts))
    print(f"{name}: {min(ts):.2f} s (min of 3){ratio}, tokens {int(attn.sum())}, shape {tuple(ids.shape)}", flush=True)
def fwd_plain():
    with torch.no_grad(): model(input_ids=ids, attention_mask=attn, labels=labels)
timeit("plain fwd+bwd", plain, "step")
timeit("plain fwd", fwd_plain, "fwd")
with tempfile.TemporaryDirectory() as out:
    args = SFTConfig(**local_run_args(cfg.train, 0, out), per_device_train_batch_size=cfg.train.batch_size,
                     max_length=cfg.model.max_length, completion_only_loss=True, logging_strategy="no")
    tr = ProximalSFTTrainer(anchor={}, mu=0.0, model=model, args=args,
                            train_dataset=data.train.remove_columns([c for c in data.train.column_names if c not in ("input_ids", "completion_mask")]),
                            processing_class=b.tokenizer)
    inputs = tr.data_collator([{"input_ids": x, "completion_mask": m} for x, m in zip(batch["input_ids"], batch["completion_mask"])])
    for name, loss_of in (("pfl-app's trainer", tr.compute_loss),
                          ("trl's own compute_loss", lambda m, x: SFTTrainer.compute_loss(tr, m, x))):
        def step():
            loss = loss_of(model, dict(inputs)); loss.backward(); model.zero_grad(set_to_none=True)
        def fwd():
            with torch.no_grad(): loss_of(model, dict(inputs))
        timeit(f"{name} fwd+bwd", step, "step")
        timeit(f"{name} fwd", fwd, "fwd")
    print("collated shape", tuple(inputs["input_ids"].shape))
