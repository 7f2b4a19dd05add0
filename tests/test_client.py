"""The client handlers on the tiny model: what leaves a client, and what it keeps."""

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from peft import PeftModel

from pfl_app.client.task_tuning import handle_evaluate, handle_train
from pfl_app.client.state import LORA_DIR, STATE_FILE, client_dir
from pfl_app.models.loading import load_causal_lm
from pfl_app.models.personalized import shared_model_bundle, tensor_group
from pfl_app.records import from_arrayrecord

from .helpers import TINY, client_context, kept_on_disk, server_message


@pytest.fixture
def bundle(tiny_cfg):
    """The process's one shared model. A test that builds a trainer on it itself leaves trl's
    patches behind (the client undoes them after each round): undo them here too, or they
    reach whichever test uses the model next in this process."""
    from pfl_app.training import restored_after_training

    shared = shared_model_bundle(tiny_cfg)
    with restored_after_training(shared.model):
        yield shared


def test_pftt_reply_carries_adapters_and_never_lora(flower_identity, bundle, tmp_path):
    glob = bundle.initial_tensors(["adapter"])
    reply = handle_train(server_message("train", "adapter", glob, tmp_path), client_context(5, 0))
    sent = from_arrayrecord(reply.content["arrays"])
    assert set(sent) == set(glob)
    assert {tensor_group(k) for k in sent} == {"adapter"}
    assert not any("lora" in k for k in sent)
    assert any(not np.array_equal(sent[k], glob[k]) for k in sent)  # it trained
    assert reply.content["metrics"]["num-examples"] > 0


def test_send_all_reply_carries_lora_too(flower_identity, bundle, tmp_path):
    groups = ["adapter", "lora_A", "lora_B"]
    glob = bundle.initial_tensors(groups)
    reply = handle_train(server_message("train", ",".join(groups), glob, tmp_path), client_context(5, 0))
    assert {tensor_group(k) for k in from_arrayrecord(reply.content["arrays"])} == set(groups)


def test_lora_persists_per_node_across_rounds_and_is_not_shared(flower_identity, bundle, tmp_path):
    glob = bundle.initial_tensors(["adapter"])
    ctx_a, ctx_b = client_context(5, 0), client_context(6, 1)
    handle_train(server_message("train", "adapter", glob, tmp_path), ctx_a)
    lora_a1 = kept_on_disk(tmp_path, 0)
    handle_train(server_message("train", "adapter", glob, tmp_path), ctx_b)
    lora_b1 = kept_on_disk(tmp_path, 1)
    assert {tensor_group(k) for k in lora_a1} == {"lora_A", "lora_B"}
    # B is zero at init, so a trained client's B is its own
    key_b = next(k for k in lora_a1 if tensor_group(k) == "lora_B")
    assert not np.array_equal(lora_a1[key_b], lora_b1[key_b])
    # round 2 starts from client A's own LoRA, not from B's (the model is shared)
    handle_train(server_message("train", "adapter", glob, tmp_path, rnd=2), ctx_a)
    lora_a2 = kept_on_disk(tmp_path, 0)
    delta_from_a = np.abs(lora_a2[key_b] - lora_a1[key_b]).mean()
    delta_from_b = np.abs(lora_a2[key_b] - lora_b1[key_b]).mean()
    assert delta_from_a < delta_from_b


def test_a_clients_tensors_survive_between_rounds_through_disk_alone(flower_identity, bundle, tmp_path):
    """Nothing of a client's tensors is kept in its Context (the simulation holds every node's
    for the whole run): round 2 on a new, empty Context starts from round 1's tensors on disk,
    exactly as on the Context round 1 used."""
    glob = bundle.initial_tensors(["adapter"])
    same, fresh, cold = tmp_path / "same", tmp_path / "fresh", tmp_path / "cold"
    ctx = client_context(5, 0)
    handle_train(server_message("train", "adapter", glob, same), ctx)
    # the node's Context gets no tensors, only the round of the last save
    assert not ctx.state.array_records and dict(ctx.state["pfl.saved-round.local_tensors"])["round"] == 1
    handle_train(server_message("train", "adapter", glob, same, rnd=2), ctx)
    handle_train(server_message("train", "adapter", glob, fresh), client_context(5, 0))
    handle_train(server_message("train", "adapter", glob, fresh, rnd=2), client_context(5, 0))
    handle_train(server_message("train", "adapter", glob, cold, rnd=2), client_context(5, 0))  # no round 1
    on_same, on_fresh, from_initial = (kept_on_disk(d, 0, 2) for d in (same, fresh, cold))
    assert set(on_fresh) == set(on_same) == set(from_initial)
    assert all(np.array_equal(on_fresh[k], on_same[k]) for k in on_same)
    assert any(not np.array_equal(on_fresh[k], from_initial[k]) for k in on_same)  # round 1 was loaded
    # evaluation on another new Context scores the tensors on disk
    evaluating = client_context(5, 0)
    m = handle_evaluate(server_message("evaluate", "adapter", glob, fresh, rnd=2), evaluating).content["metrics"]
    assert len(evaluating.state) == 0
    assert m["personalized-loss"] != pytest.approx(m["global-loss"])
    assert m["eval-seconds"] > 0


def test_an_unsampled_clients_state_is_untouched(flower_identity, bundle, tmp_path):
    glob = bundle.initial_tensors(["adapter"])
    for node, client in ((5, 0), (6, 1)):
        handle_train(server_message("train", "adapter", glob, tmp_path), client_context(node, client))
    folder = client_dir(tmp_path, 1)
    before = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
    kept = kept_on_disk(tmp_path, 1)
    # round 2 samples client 0 alone, for training and evaluation
    handle_train(server_message("train", "adapter", glob, tmp_path, rnd=2), client_context(5, 0))
    handle_evaluate(server_message("evaluate", "adapter", glob, tmp_path, rnd=2), client_context(5, 0))
    assert {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()} == before
    assert STATE_FILE in before and not (folder / "local_tensors.previous.safetensors").exists()
    # sampled again in round 3, client 1 goes on from its round-1 tensors
    later = kept_on_disk(tmp_path, 1, up_to_round=2)
    assert all(np.array_equal(later[k], kept[k]) for k in kept)
    assert (client_dir(tmp_path, 0) / "local_tensors.previous.safetensors").exists()


def test_saved_lora_loads_with_peft(flower_identity, bundle, tiny_cfg, tmp_path):
    glob = bundle.initial_tensors(["adapter"])
    ctx = client_context(5, 0)
    handle_train(server_message("train", "adapter", glob, tmp_path), ctx)
    kept = kept_on_disk(tmp_path, 0)
    base = load_causal_lm("tiny-llama", seed=tiny_cfg.seed)
    peft_model = PeftModel.from_pretrained(base, client_dir(tmp_path, 0) / LORA_DIR)
    loaded = {n: p.detach().numpy() for n, p in peft_model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(kept)
    assert all(np.allclose(loaded[k], kept[k]) for k in kept)


def test_evaluate_reports_personalized_and_global_scores(flower_identity, bundle, tmp_path):
    glob = bundle.initial_tensors(["adapter"])
    ctx = client_context(5, 0)
    reply = handle_evaluate(server_message("evaluate", "adapter", glob, tmp_path), ctx)
    m = reply.content["metrics"]
    for prefix in ("personalized", "global"):
        assert 0.0 <= m[f"{prefix}-accuracy"] <= 1.0
        assert m[f"{prefix}-loss"] > 0
    # before any training the client's LoRA is the initial one: both models are the same
    assert m["personalized-loss"] == pytest.approx(m["global-loss"])
    handle_train(server_message("train", "adapter", glob, tmp_path), ctx)
    m2 = handle_evaluate(server_message("evaluate", "adapter", glob, tmp_path), ctx).content["metrics"]
    assert m2["personalized-loss"] != pytest.approx(m2["global-loss"])
    assert m2["global-loss"] == pytest.approx(m["global-loss"])  # global: same adapters, no LoRA


def test_tensors_that_do_not_match_the_groups_fail_the_call(flower_identity, bundle, tmp_path):
    wrong = bundle.initial_tensors(["lora_A"])
    with pytest.raises(ValueError, match="do not match the shared groups"):
        handle_train(server_message("train", "adapter", wrong, tmp_path), client_context(5, 0))


def test_missing_node_config_is_explained(flower_identity, bundle, tmp_path):
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config=dict(TINY))
    with pytest.raises(ValueError, match="partition-id"):
        handle_train(server_message("train", "adapter", bundle.initial_tensors(["adapter"]), tmp_path), ctx)


def test_only_adapters_and_lora_are_trainable(bundle):
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert trainable and all(tensor_group(n) is not None for n in trainable)
    frozen = [n for n, p in bundle.model.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen)
    assert torch.is_floating_point(next(bundle.model.parameters()))


def test_server_preflight_names_a_missing_dataset(tmp_path):
    from pfl_app.config import parse_run_config
    from pfl_app.server.run import check_data_sources

    with pytest.raises(ValueError, match="data.tasks.*nope.jsonl"):
        check_data_sources(parse_run_config({**TINY, "data.tasks": f"bbc-news,{tmp_path / 'nope.jsonl'}"}))
    check_data_sources(parse_run_config({**TINY, "data.tasks": "bbc-news,chatterbot-qa"}))


def test_local_training_counts_the_non_padding_tokens_it_trained_on(bundle, tiny_cfg):
    from dataclasses import replace

    from datasets import Dataset

    from pfl_app.models.personalized import set_trainable
    from pfl_app.training import flop_params, train_locally, trainable_params
    from pfl_app.wireless.device import training_flops

    lengths = [3, 5, 7, 9]
    ids = [[(7 * i + j) % 50 + 10 for j in range(n)] for i, n in enumerate(lengths)]
    examples = Dataset.from_dict({"input_ids": ids, "completion_mask": [[0] + [1] * (n - 1) for n in lengths]})
    set_trainable(bundle.model, ("adapter", "lora_A", "lora_B"))
    trained = trainable_params(bundle.model)
    # One batch holds all four sequences, so two steps see each twice: 2 x 24 tokens, not the
    # 2 x 4 x 9 a padded count would give.
    settings = replace(tiny_cfg.train, local_steps=2, batch_size=4)
    result = train_locally(bundle.model, bundle.tokenizer, examples, settings, seed=0, max_length=64)
    w = result.workload
    assert w.tokens == 2 * sum(lengths)
    assert (w.params, w.trainable) == (flop_params(bundle.model), trained)
    assert 0 < trained < w.params
    assert w.flops == training_flops(w.params, trained, w.tokens)


def test_the_local_loss_is_trls_answer_only_loss_without_its_per_token_metrics(bundle, tiny_cfg, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from pfl_app.models.personalized import set_trainable
    from pfl_app.training import ProximalSFTTrainer, local_run_args

    lengths = [4, 6, 9]
    ids = [[(5 * i + j) % 50 + 10 for j in range(n)] for i, n in enumerate(lengths)]
    # two prompt tokens a sequence: a loss over every token would differ
    masks = [[0, 0] + [1] * (n - 2) for n in lengths]
    examples = Dataset.from_dict({"input_ids": ids, "completion_mask": masks})
    set_trainable(bundle.model, ("adapter", "lora_A", "lora_B"))
    args = SFTConfig(**local_run_args(tiny_cfg.train, 0, str(tmp_path)), per_device_train_batch_size=3,
                     max_length=64, completion_only_loss=True, logging_strategy="no")
    trainer = ProximalSFTTrainer(anchor={}, mu=0.0, model=bundle.model, args=args, train_dataset=examples,
                                 processing_class=bundle.tokenizer)
    batch = trainer.data_collator([{"input_ids": x, "completion_mask": m} for x, m in zip(ids, masks)])
    for count in (11, None):
        ours = trainer.compute_loss(bundle.model, dict(batch), num_items_in_batch=count)
        assert not trainer._metrics["train"]  # trl's fused head (entropy, top-1) never ran
        trls = SFTTrainer.compute_loss(trainer, bundle.model, dict(batch), num_items_in_batch=count)
        assert float(ours) == pytest.approx(float(trls), rel=1e-5)
        trainer._metrics["train"].clear()
    every_token = bundle.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               labels=batch["input_ids"]).loss
    assert float(ours) != pytest.approx(float(every_token), rel=1e-5)

    # FedProx's term is added on top: mu / 2 * ||w - anchor||^2 over the anchored tensors only.
    torch.manual_seed(0)
    plain = float(trainer.compute_loss(bundle.model, dict(batch)))
    name, param = next((n, q) for n, q in bundle.model.named_parameters() if q.requires_grad and "adapter" in n)
    trainer.anchor, trainer.mu = {name: param.detach() + 0.1}, 0.4
    torch.manual_seed(0)
    proximal = float(trainer.compute_loss(bundle.model, dict(batch)))
    assert proximal == pytest.approx(plain + 0.5 * 0.4 * 0.01 * param.numel(), rel=1e-4)


def test_flop_params_leaves_out_an_input_embedding_table_that_only_looks_up(bundle):
    from pfl_app.training import flop_params

    model = bundle.model
    every = sum(p.numel() for p in model.parameters())
    table = model.get_input_embeddings().weight
    tied = table is model.get_output_embeddings().weight
    assert flop_params(model) == (every if tied else every - table.numel())


def test_a_train_reply_reports_its_workload_beside_the_metrics(flower_identity, bundle, tmp_path):
    glob = bundle.initial_tensors(["adapter"])
    reply = handle_train(server_message("train", "adapter", glob, tmp_path), client_context(5, 0))
    work = reply.content["wireless-workload"]
    assert work["train-tokens"] > 0 and work["train-flops"] > 4 * work["model-params"] * work["train-tokens"]
    assert "train-tokens" not in reply.content["metrics"]  # simulation accounting, not payload


def test_scores_made_in_the_train_message_are_those_of_the_evaluate_message(flower_identity, bundle, tmp_path):
    ctx = client_context(5, 0)
    first = handle_train(server_message("train", "adapter", bundle.initial_tensors(["adapter"]), tmp_path), ctx)
    glob = from_arrayrecord(first.content["arrays"])  # round 1's aggregate, with one client
    evaluated = handle_evaluate(server_message("evaluate", "adapter", glob, tmp_path), ctx).content["metrics"]

    def second_round(score_received):
        msg = server_message("train", "adapter", glob, tmp_path, rnd=2)
        if score_received:
            msg.content["config"]["score-received"] = True
        return handle_train(msg, ctx)

    scored, plain = second_round(True), second_round(False)
    metrics = scored.content["metrics"]
    for key in ("personalized-accuracy", "personalized-loss", "global-accuracy", "global-loss", "num-examples"):
        assert metrics[f"received-{key}"] == pytest.approx(evaluated[key], rel=1e-6), key
    assert not any(k.startswith("received-") for k in plain.content["metrics"])
    # Scoring first leaves the round's training as it was.
    a, b = from_arrayrecord(scored.content["arrays"]), from_arrayrecord(plain.content["arrays"])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert scored.content["metrics"]["train-loss"] == plain.content["metrics"]["train-loss"]


def test_a_client_whose_last_save_is_not_on_this_machine_says_so(flower_identity, bundle, tmp_path):
    """A Ray cluster of several machines without a shared results folder: round 2 runs where
    round 1's save is not. Starting over from the initial tensors would go unnoticed."""
    glob = bundle.initial_tensors(["adapter"])
    ctx = client_context(5, 0)
    handle_train(server_message("train", "adapter", glob, tmp_path / "machine-a"), ctx)
    with pytest.raises(FileNotFoundError, match="results-dir.*shares"):
        handle_train(server_message("train", "adapter", glob, tmp_path / "machine-b", rnd=2), ctx)
    # where the save is, the same Context goes on
    handle_train(server_message("train", "adapter", glob, tmp_path / "machine-a", rnd=2), ctx)
