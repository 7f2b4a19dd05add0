import tomllib
from pathlib import Path

import pytest

from pfl_app.config import FIELDS, METHODS, ConfigError, defaults, markdown_table, parse_run_config, validate_flat
from pfl_app.launch import _flatten
from pfl_app.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_field_with_its_default():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flat = _flatten(pyproject["tool"]["flwr"]["app"]["config"])
    assert flat == defaults()


def test_every_method_has_a_strategy():
    assert set(METHODS) == set(STRATEGIES)


def test_defaults_parse():
    cfg = parse_run_config({})
    assert cfg.method == "pftt"
    assert cfg.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert cfg.data.tasks == ("bbc-news",)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown run-config key.*'lora.rank'"):
        validate_flat({"lora.rank": 4})


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match="'num-server-rounds' must be of type int"):
        validate_flat({"num-server-rounds": "three"})
    with pytest.raises(ConfigError, match="'train.learning-rate' must be of type float"):
        validate_flat({"train.learning-rate": True})


def test_disallowed_value_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        validate_flat({"method": "fedsgd"})
    assert "'method'" in str(err.value) and "pftt" in str(err.value) and "send-all" in str(err.value)
    with pytest.raises(ConfigError, match="data.partitioner.*iid, dirichlet, pathological, natural"):
        validate_flat({"data.partitioner": "random"})


@pytest.mark.parametrize(
    "key, value",
    [("num-server-rounds", 0), ("lora.r", -1), ("data.test-fraction", 1.0), ("fraction-train", 0.0),
     ("lora.dropout", 1.0), ("data.tasks", " , ")],
)
def test_out_of_range_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate_flat({key: value})


def test_int_accepted_where_float_expected():
    assert validate_flat({"data.alpha": 1})["data.alpha"] == 1.0


def test_every_field_has_help():
    assert all(f.help for f in FIELDS)


def test_docs_carry_the_current_table_of_keys():
    # regenerate with: python -m pfl_app.config
    assert markdown_table() in (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{f.key}`" in markdown_table() for f in FIELDS)
