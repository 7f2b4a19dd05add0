"""Each PFIT client's preference weights and prompts."""

import pytest

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.rlhf.client_setup import check_prompt_pool, client_preference, client_prompts, prompt_dataset, spread


def _settings(**kw):
    return parse_run_config({f"rlhf.{k}": v for k, v in kw.items()}).rlhf


def test_preferences_spread_from_helpfulness_first_to_safety_first():
    s = _settings()
    prefs = [client_preference(s, i, 5) for i in range(5)]
    assert [p.safety for p in prefs] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert all(p.helpfulness + p.safety == pytest.approx(1.0) for p in prefs)
    assert prefs[0].weights == [pytest.approx(0.9), pytest.approx(0.1)]
    assert prefs[0].mix(2.0, -1.0) == pytest.approx(0.9 * 2.0 - 0.1)
    assert spread(0.2, 0.8, 0, 1) == 0.2


def test_a_node_config_sets_its_own_safety_weight_and_bad_values_are_refused():
    s = _settings()
    assert client_preference(s, 0, 4, {"safety-weight": 0.75}).safety == 0.75
    with pytest.raises(ValueError, match="safety-weight"):
        client_preference(s, 0, 4, {"safety-weight": 1.5})


def test_clients_share_one_balanced_evaluation_set_and_split_the_rest_with_their_own_harmful_share():
    s = _settings(**{"train-prompts": 20, "eval-prompts": 6})
    prompts = [client_prompts(s, i, 3, 0) for i in range(3)]
    evals = [[p.text for p in c.evaluate] for c in prompts]
    trains = [{p.text for p in c.train} for c in prompts]
    assert evals[0] == evals[1] == evals[2] and len(set(evals[0])) == 6
    assert sum(p.harmful for p in prompts[0].evaluate) == 3
    for i in range(3):
        assert not set(evals[0]) & trains[i]
        for j in range(i + 1, 3):
            assert not trains[i] & trains[j]
    shares = [sum(p.harmful for p in c.train) / len(c.train) for c in prompts]
    assert shares == pytest.approx([0.25, 0.5, 0.75])
    assert [p.text for p in client_prompts(s, 0, 3, 1).evaluate] != evals[0]  # the seed picks the set


def test_the_last_rounds_larger_evaluation_set_extends_the_per_round_one_and_keeps_out_of_training():
    # 2000 training prompts cycle through each client's whole share of the pool, so a final
    # prompt left in the pool would show up in training.
    s = _settings(**{"train-prompts": 2000, "eval-prompts": 4, "final-eval-prompts": 10})
    prompts = [client_prompts(s, i, 2, 0) for i in range(2)]
    final = [p.text for p in prompts[0].evaluate_final]
    assert final == [p.text for p in prompts[1].evaluate_final] and len(set(final)) == 10
    assert sum(p.harmful for p in prompts[0].evaluate_final) == 5
    every_round = [p.text for p in prompts[0].evaluate]
    assert set(every_round) < set(final) and sum(p.harmful for p in prompts[0].evaluate) == 2
    for c in prompts:
        assert not set(final) & {p.text for p in c.train}
    default = client_prompts(_settings(**{"train-prompts": 20, "eval-prompts": 4}), 0, 2, 0)
    assert default.evaluate_final == default.evaluate  # 0: the last round asks what the others ask


def test_a_final_evaluation_set_smaller_than_the_per_round_one_is_refused():
    with pytest.raises(ConfigError, match="'rlhf.final-eval-prompts' = 4 must be 0 or >= 'rlhf.eval-prompts' \\(8\\)"):
        _settings(**{"eval-prompts": 8, "final-eval-prompts": 4})


def test_a_pool_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="rlhf.eval-prompts"):
        client_prompts(_settings(**{"eval-prompts": 5000}), 0, 2, 0)
    with pytest.raises(ValueError, match="rlhf.final-eval-prompts"):
        client_prompts(_settings(**{"final-eval-prompts": 5000}), 0, 2, 0)
    with pytest.raises(ValueError, match="1000 clients"):
        client_prompts(_settings(), 0, 1000, 0)


def test_prompt_dataset_is_a_chat_with_the_question_alongside():
    c = client_prompts(_settings(), 0, 2, 0)
    ds = prompt_dataset(c.train[:3])
    assert ds[0]["prompt"] == [{"role": "user", "content": c.train[0].text}]
    assert ds["question"] == [p.text for p in c.train[:3]]


def test_check_prompt_pool_passes_a_config_that_fits_and_names_the_key_otherwise():
    check_prompt_pool(_settings(), 4, 0)
    with pytest.raises(ValueError, match="rlhf.eval-prompts"):
        check_prompt_pool(_settings(**{"eval-prompts": 8}), 1000, 0)


class _Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(self.n))


def test_the_server_refuses_a_pool_too_small_before_training_reward_models(monkeypatch):
    from flwr.app import Context, RecordDict

    from pfl_app.server import run as server_run

    def trained(cfg):
        raise AssertionError("reward models prepared before the prompt pool was checked")

    monkeypatch.setattr(server_run, "prepare_reward_models", trained)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"method": "pfit", "rlhf.eval-prompts": 8})
    with pytest.raises(ValueError, match="rlhf.eval-prompts"):
        server_run.run_server(_Grid(1000), context)
    # With few clients connected, min-clients sets how many the pool must serve.
    context.run_config.update({"min-clients": 1000})
    with pytest.raises(ValueError, match="rlhf.eval-prompts"):
        server_run.run_server(_Grid(0), context)
