"""Local RLHF with trl's GRPOTrainer on the tiny model: the mixed reward, the proximal
term, what the trainer leaves behind, and what a sparse attention update sends."""

import numpy as np
import pytest
import torch

from pfl_app.config import parse_run_config
from pfl_app.models.personalized import (
    build_personalized_model,
    get_tensors,
    set_trainable,
    sparse_layers,
    trainable_names,
)
from pfl_app.records import to_arrayrecord
from pfl_app.rlhf.client_setup import Preference, client_prompts, prompt_dataset
from pfl_app.rlhf.grpo import load_optimizer_state, optimizer_state, train_policy

from .helpers import TINY

RLHF = {**TINY, "method": "pfit", "rlhf.sparse-update": "dense", "rlhf.max-completion-length": 4,
        "rlhf.prompts-per-step": 2, "rlhf.num-generations": 2, "rlhf.train-prompts": 4, "train.local-steps": 2,
        "rlhf.warmup-steps": 0}


class ConstantReward:
    """A reward function that pays ``value`` for every completion and records its calls."""

    def __init__(self, name, value):
        self.__name__, self.value, self.calls = name, value, []

    def __call__(self, prompts, completions, question=None, **kwargs):
        self.calls.append(list(question))
        return [self.value] * len(completions)


class LengthReward:
    """Pays the completion's length in characters: a reward GRPO can actually climb."""

    __name__ = "length"

    def __call__(self, prompts, completions, **kwargs):
        return [float(len(c[-1]["content"])) for c in completions]


def _setup(**overrides):
    cfg = parse_run_config({**RLHF, **overrides})
    torch.manual_seed(0)
    model, tok = build_personalized_model(cfg)
    set_trainable(model, ("lora_A", "lora_B"))
    prompts = client_prompts(cfg.rlhf, 0, 2, cfg.seed)
    return cfg, model, tok, prompt_dataset(prompts.train)


@pytest.mark.parametrize("aggregation", [{}, {"rlhf.reward-aggregation": "normalize-then-sum"},
                                         {"rlhf.scale-rewards": "none"}])
def test_the_reward_is_the_clients_weighted_sum_of_the_two_reward_models(aggregation):
    # whatever GRPO makes of the rewards for its advantages, the reward a client reports (what
    # PFIT's server weights it by) stays the raw weighted sum
    cfg, model, tok, ds = _setup(**aggregation)
    helpful, safe = ConstantReward("helpfulness", 2.0), ConstantReward("safety", -1.0)
    result = train_policy(model, tok, ds, [helpful, safe], Preference(0.3, 0.7), cfg.train, cfg.rlhf, seed=0)
    assert result.steps == 2
    assert result.reward_helpfulness == pytest.approx(2.0) and result.reward_safety == pytest.approx(-1.0)
    assert result.reward == pytest.approx(0.3 * 2.0 + 0.7 * -1.0)
    # the reward models see the user's question, not the chat-templated prompt
    assert set(helpful.calls[0]) <= set(ds["question"])


def test_grpo_trains_only_the_lora_and_leaves_the_shared_model_as_it_was():
    cfg, model, tok, ds = _setup()
    before = get_tensors(model, ("adapter", "lora_A", "lora_B"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    train_policy(model, tok, ds, [LengthReward(), ConstantReward("safety", 0.0)], Preference(1.0, 0.0),
                 cfg.train, cfg.rlhf, seed=0)
    after = get_tensors(model, ("adapter", "lora_A", "lora_B"))
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed)
    assert list(model.peft_config) == ["default"]  # no reference adapter left behind
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    assert "forward" not in model.get_base_model().__dict__  # trl's patched forward is undone


def test_the_proximal_term_keeps_the_policy_near_the_global_weights():
    drifts = []
    for mu in (0.0, 1e4):
        cfg, model, tok, ds = _setup(**{"rlhf.proximal-mu": mu, "train.learning-rate": 0.05, "rlhf.beta": 0.0})
        anchor = get_tensors(model, ("lora_A", "lora_B"))
        train_policy(model, tok, ds, [LengthReward(), ConstantReward("safety", 0.0)], Preference(1.0, 0.0),
                     cfg.train, cfg.rlhf, seed=0, anchor=anchor)
        after = get_tensors(model, ("lora_A", "lora_B"))
        drifts.append(sum(float(((after[k] - anchor[k]) ** 2).sum()) for k in anchor))
    assert drifts[0] > 0 and drifts[1] < drifts[0]


def test_a_round_can_continue_the_optimizer_state_of_the_last_one():
    cfg, model, tok, ds = _setup()
    rewards = [LengthReward(), ConstantReward("safety", 0.0)]
    first = train_policy(model, tok, ds, rewards, Preference(1.0, 0.0), cfg.train, cfg.rlhf, seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = first.optimizer_state
    assert {k.rpartition("::")[0] for k in state} == trainable
    assert {k.rpartition("::")[2] for k in state} == {"step", "exp_avg", "exp_avg_sq"}
    assert all(float(v) == 2 for k, v in state.items() if k.endswith("::step"))  # train.local-steps = 2
    continued = train_policy(model, tok, ds, rewards, Preference(1.0, 0.0), cfg.train, cfg.rlhf, seed=1,
                             optimizer_state=state)
    fresh = train_policy(model, tok, ds, rewards, Preference(1.0, 0.0), cfg.train, cfg.rlhf, seed=1)
    steps = {k: float(v) for k, v in continued.optimizer_state.items() if k.endswith("::step")}
    assert set(steps.values()) == {4.0}  # Adam's step count and moments went on from the first call
    assert all(float(v) == 2 for k, v in fresh.optimizer_state.items() if k.endswith("::step"))
    key = next(k for k in state if k.endswith("::exp_avg_sq"))
    assert continued.optimizer_state[key].shape == state[key].shape
    assert not np.array_equal(continued.optimizer_state[key], fresh.optimizer_state[key])


def test_a_stored_optimizer_state_loads_only_into_parameters_it_names():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)  # frozen: no optimizer state of its own
    trained = [p for p in model.parameters() if p.requires_grad]
    first = torch.optim.Adam(trained)
    model(torch.ones(1, 3)).sum().backward()
    first.step()
    state = optimizer_state(first, model)
    assert {k.rpartition("::")[0] for k in state} == {"0.weight", "0.bias", "1.bias"}
    state["2.weight::step"] = np.array(1.0)  # a parameter this model does not have
    fresh = torch.optim.Adam(trained)
    assert load_optimizer_state(fresh, model, state) == 3
    assert float(fresh.state[model[0].weight]["step"]) == 1.0
    assert torch.equal(fresh.state[model[0].weight]["exp_avg"], first.state[model[0].weight]["exp_avg"])
    assert model[1].weight not in fresh.state


def test_sparse_layer_choices():
    assert sparse_layers("dense", 3, 30) is None
    assert sparse_layers("last-k", 3, 30) == (27, 28, 29)
    assert sparse_layers("last-k", 50, 4) == (0, 1, 2, 3)
    assert sparse_layers("every-k", 10, 30) == (9, 19, 29)
    with pytest.raises(ValueError, match="rlhf.sparse-k"):
        sparse_layers("every-k", 31, 30)


def test_a_sparse_update_carries_and_sends_only_the_chosen_layers_attention_lora():
    sizes = {}
    for update in ("dense", "last-k"):
        cfg = parse_run_config({**RLHF, "rlhf.sparse-update": update, "rlhf.sparse-k": 1})
        model, _ = build_personalized_model(cfg)
        names = trainable_names(model, ("lora_A", "lora_B"))
        layers = {int(n.split(".layers.")[1].split(".")[0]) for n in names}
        assert layers == ({0, 1} if update == "dense" else {1})
        assert all(".self_attn." in n for n in names)
        sizes[update] = to_arrayrecord(get_tensors(model, ("lora_A", "lora_B"))).count_bytes()
    assert sizes["last-k"] < 0.6 * sizes["dense"]
    # a task-tuning method ignores the RLHF keys and keeps LoRA everywhere
    model, _ = build_personalized_model(parse_run_config({**RLHF, "method": "pftt", "rlhf.sparse-k": 1}))
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in trainable_names(model, ("lora_A",))} == {0, 1}


def test_the_reward_scaling_and_aggregation_reach_grpo():
    from pfl_app.rlhf.grpo import grpo_config

    cfg = parse_run_config({**RLHF, "rlhf.scale-rewards": "none"})
    args = grpo_config(cfg.train, cfg.rlhf, Preference(0.1, 0.9), 0, "unused")
    assert args.scale_rewards == "none" and args.reward_weights == [0.1, 0.9]
    cfg = parse_run_config({**RLHF, "rlhf.reward-aggregation": "normalize-then-sum"})
    assert grpo_config(cfg.train, cfg.rlhf, Preference(0.1, 0.9), 0, "unused").multi_objective_aggregation \
        == "normalize_then_sum"
    default = grpo_config(cfg.train, parse_run_config(RLHF).rlhf, Preference(0.5, 0.5), 0, "unused")
    assert default.scale_rewards == "group" and default.multi_objective_aggregation == "sum_then_normalize"
    with pytest.raises(ValueError, match="rlhf.reward-aggregation.*sum-then-normalize, normalize-then-sum"):
        parse_run_config({**RLHF, "rlhf.reward-aggregation": "mean"})
    # trl ignores the scaling under normalize-then-sum: asking for one is an error, not a silent no-op
    with pytest.raises(ValueError, match="rlhf.scale-rewards.*no effect.*allowed with it: group"):
        parse_run_config({**RLHF, "rlhf.reward-aggregation": "normalize-then-sum", "rlhf.scale-rewards": "none"})


class CountingReward(ConstantReward):
    """A reward that counts what it scores as a RewardScorer does: 5 tokens a completion."""

    tokens_scored, flop_params = 0, 1000

    def __call__(self, prompts, completions, question=None, **kwargs):
        self.tokens_scored += 5 * len(completions)
        return super().__call__(prompts, completions, question, **kwargs)


def test_a_round_reports_its_tokens_and_flops():
    from pfl_app.rlhf.grpo import grpo_workload
    from pfl_app.training import flop_params, trainable_params

    cfg, model, tok, ds = _setup()
    params, trained = flop_params(model), trainable_params(model)
    counting, plain = CountingReward("helpfulness", 1.0), ConstantReward("safety", 0.0)
    result = train_policy(model, tok, ds, [counting, plain], Preference(0.5, 0.5), cfg.train, cfg.rlhf, seed=0)
    w = result.workload
    sequences = cfg.train.local_steps * cfg.rlhf.prompts_per_step * cfg.rlhf.num_generations
    prompt_tokens = [len(tok(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False),
                             add_special_tokens=False)["input_ids"]) for p in ds["prompt"]]
    # every sampled sequence: its prompt and at most max-completion-length generated tokens
    assert sequences * min(prompt_tokens) < w.tokens <= sequences * (max(prompt_tokens) + cfg.rlhf.max_completion_length)
    assert counting.tokens_scored == 5 * sequences
    # sampling + training + reference (beta > 0) + the counting reward model; the plain one is not counted
    assert cfg.rlhf.beta > 0
    assert w.flops == grpo_workload(params, trained, w.tokens, cfg.rlhf.beta, [(1000, 5 * sequences)]).flops
    assert (w.params, w.trainable) == (params, trained)
