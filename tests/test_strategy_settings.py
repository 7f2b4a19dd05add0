"""Strategies take their settings in the constructor, from the run config, as Flower's own
FedProx takes proximal_mu: nothing is set on a strategy after it is built."""

import math

import pytest

from pfl_app.config import parse_run_config
from pfl_app.strategies import PFIT, PFTT, STRATEGIES, PersonalizedFedAvg, RlhfFedAvgUniform
from pfl_app.strategies.server_optimizers import SERVER_OPTIMIZERS, build_strategy

from .helpers import TINY


def test_settings_come_from_the_run_config():
    cfg = parse_run_config({**TINY, "method": "pfit", "num-server-rounds": 7, "update-norm-factor": 4.0,
                            "min-answers": 2, "rlhf.aggregation-temperature": math.inf,
                            "rlhf.start-from": "global"})
    strategy = PFIT.from_run_config(cfg)
    assert (strategy.norm_factor, strategy.min_answers, strategy.num_rounds) == (4.0, 2, 7)
    assert strategy.temperature == math.inf and strategy.start_from == "global"
    # A baseline takes the settings its class declares, and only those.
    uniform = RlhfFedAvgUniform.from_run_config(cfg)
    assert uniform.num_rounds == 7 and not hasattr(uniform, "temperature")


@pytest.mark.parametrize("optimizer", list(SERVER_OPTIMIZERS))
def test_a_server_optimizer_keeps_the_strategys_settings(optimizer):
    cfg = parse_run_config({**TINY, "method": "pfit", "num-server-rounds": 5, "min-answers": 3,
                            "rlhf.aggregation-temperature": 0.25})
    strategy = build_strategy("pfit", STRATEGIES, optimizer=optimizer, run_config=cfg, learning_rate=0.1,
                              proximal_mu=0.5, on_round_end=print)
    assert isinstance(strategy, PFIT)
    assert (strategy.temperature, strategy.num_rounds, strategy.min_answers) == (0.25, 5, 3)
    assert strategy.method == "pfit" and strategy.on_round_end is print


@pytest.mark.parametrize("name, value, allowed", [
    ("norm_factor", -1.0, ">= 0"), ("min_answers", 0, ">= 1"), ("temperature", 0.0, "> 0"),
    ("start_from", "nowhere", "personal, global"), ("min_answers", "two", ">= 1"),
])
def test_a_bad_setting_is_refused_by_the_constructor(name, value, allowed):
    with pytest.raises(ValueError, match=rf"{name} = .* is not allowed; allowed: .*{allowed}"):
        PFIT(**{name: value})
    with pytest.raises(ValueError, match=name):
        build_strategy("pfit", STRATEGIES, optimizer="fedadam", **{name: value})


def test_an_unknown_setting_is_not_taken_silently():
    with pytest.raises(TypeError):
        PFTT(temperature=0.5)  # PFTT has no temperature: FedAvg's constructor refuses it


def test_a_users_strategy_declares_a_setting_once():
    class Capped(PFTT):
        cap: float = 1.0
        option_checks = {"cap": lambda v: None if v > 0 else "a number > 0"}

        @classmethod
        def run_config_options(cls, cfg):
            return {**super().run_config_options(cfg), "cap": 2.0 * cfg.update_norm_factor}

    strategy = Capped.from_run_config(parse_run_config({**TINY, "update-norm-factor": 3.0}))
    assert strategy.cap == 6.0 and strategy.norm_factor == 3.0
    assert set(Capped.option_names()) == set(PersonalizedFedAvg.option_names()) | {"cap"}
    assert {"norm_factor", "min_answers", "eval_every", "compression"} <= set(PersonalizedFedAvg.option_names())
    assert "cap" not in PersonalizedFedAvg.option_names()
    with pytest.raises(ValueError, match="cap = -1"):
        Capped(cap=-1)


def test_the_settings_example_in_the_docs_runs(project_dir):
    import re

    text = (project_dir / "docs" / "extending.md").read_text()
    # This section's block: the channel section further down has blocks of its own.
    section = text.split("## Settings of a method's own", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    namespace: dict = {}
    exec(compile(code, "docs/extending.md", "exec"), namespace)
    with pytest.raises(ValueError, match="cap = -1"):
        namespace["Capped"](cap=-1)
