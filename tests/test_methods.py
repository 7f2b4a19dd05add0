"""The method registry (pfl_app.methods): names, user paths, entry points, and the errors a
user sees for a method that is not there."""

import json
import sys

import pytest

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.methods import (
    MethodError, _entry_points, method_label, method_names, method_spec, recorded_spec, register_method, unregister_method,
)
from pfl_app.strategies import FedDPA, PersonalizedFedAvg, RlhfFedAvgUniform

USER_MODULE = '''
from pfl_app.strategies import RlhfFedAvg


class SafetyFirst(RlhfFedAvg):
    delivered_model = "global"


class NotAStrategy:
    pass


class BadKind(RlhfFedAvg):
    client_kind = "vision"
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_methods.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_methods"
    sys.modules.pop("user_methods", None)


def test_builtin_methods_carry_their_facts():
    assert method_names()[:2] == ("pftt", "send-all") and len(method_names()) >= 13
    assert method_spec("feddpa").strategy is FedDPA and method_spec("feddpa").second_lora
    assert not method_spec("pftt").second_lora and method_spec("pftt").client_kind == "task"
    pfit = method_spec("pfit")
    assert pfit.uses_reward_models and pfit.delivered_model == "personalized"
    assert method_spec("rlhf-fedavg").strategy is RlhfFedAvgUniform and method_spec("rlhf-fedavg").delivered_model == "global"


def test_a_users_class_by_path_inherits_its_facts(user_module):
    spec = method_spec(f"{user_module}:SafetyFirst")
    assert spec.client_kind == "rlhf" and spec.delivered_model == "global" and spec.name == "user_methods:SafetyFirst"
    cfg = parse_run_config({"method": "user_methods:SafetyFirst"})
    assert cfg.method_spec.strategy.__name__ == "SafetyFirst"
    assert method_label(cfg.method) == "SafetyFirst"


@pytest.mark.parametrize("method, expected", [
    ("user_methods:Missing", "module 'user_methods' has no class 'Missing'"),
    ("no_such_package.methods:Mine", "Cannot import 'no_such_package.methods'"),
    ("user_methods:NotAStrategy", "is not a strategy class"),
    ("user_methods:BadKind", "BadKind.client_kind = 'vision'; allowed: task, rlhf"),
    ("user methods:Mine", "not of the form 'package.module:name'"),
])
def test_a_bad_method_path_is_refused_naming_the_key(user_module, method, expected):
    with pytest.raises(ConfigError) as err:
        parse_run_config({"method": method})
    assert "'method'" in str(err.value) and expected in str(err.value)


def test_a_misspelt_method_name_gets_a_suggestion():
    with pytest.raises(MethodError, match=r"'ptft' is not a method \(did you mean 'pftt'\?\)"):
        method_spec("ptft")


def test_a_name_is_registered_once():
    class Mine(PersonalizedFedAvg):
        pass

    with pytest.raises(MethodError, match="registered already"):
        register_method("pftt")(Mine)
    with pytest.raises(MethodError, match="without ':'"):
        register_method("a:b")(Mine)
    try:
        register_method("mine")(Mine)
        register_method("mine")(Mine)  # the same class again: a module imported twice
        assert "mine" in method_names() and method_spec("mine").strategy is Mine
    finally:
        unregister_method("mine")
    assert "mine" not in method_names()


def test_an_installed_package_names_a_method_by_entry_point(user_module, tmp_path):
    dist = tmp_path / "user_methods-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-methods\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pfl_app.methods]\nsafety-first = user_methods:SafetyFirst\n")
    _entry_points.cache_clear()  # read once per process: this one was installed after
    try:
        assert "safety-first" in method_names()
        assert parse_run_config({"method": "safety-first"}).method_spec.strategy.__name__ == "SafetyFirst"
    finally:
        _entry_points.cache_clear()  # uninstalled with tmp_path


def test_a_finished_runs_facts_come_from_its_summary_where_it_has_them():
    assert recorded_spec({"method": "my_pkg:Gone", "client_kind": "rlhf", "delivered_model": "global"}) == ("rlhf", "global")
    assert recorded_spec({"method": "rlhf-single"}) == ("rlhf", "global")  # an older summary: looked up
    assert recorded_spec({"method": "my_pkg:Gone"}) == ("task", "personalized")  # no longer importable
    assert json.dumps(recorded_spec({}))  # no method at all
