import dataclasses
import difflib
import pickle
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from pfl_app import config
from pfl_app.config import (FIELDS, METHODS, ConfigError, Field, RunConfig, defaults, fields_of, markdown_table,
                            parse_run_config, pyproject_body, setting, validate_flat)
from pfl_app.launch import _flatten
from pfl_app.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_field_with_its_default():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flat = _flatten(pyproject["tool"]["flwr"]["app"]["config"])
    diff = "\n".join(difflib.unified_diff(pyproject_body(flat).splitlines(), pyproject_body().splitlines(),
                                         "pyproject.toml", "pfl_app/config.py", lineterm=""))
    # the body to paste: python -m pfl_app.config --pyproject
    assert flat == defaults(), diff


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


def _settings_declared_under(root):
    """(section, field name) of every field under ``root`` that is a setting, found without
    the walker that config.py uses ("" for root's own)."""
    out = []
    for f in dataclasses.fields(root):
        # config.py's annotations are strings (from __future__ import annotations)
        section = getattr(config, f.type, None) if isinstance(f.type, str) else f.type
        if dataclasses.is_dataclass(section):
            out += [(f.name, g.name) for g in dataclasses.fields(section)]
        elif f.name != "flat":
            out.append(("", f.name))
    return out


def test_every_settings_field_is_exactly_one_key():
    declared = _settings_declared_under(RunConfig)
    keys = [f.key for f in FIELDS]
    assert len(declared) == len(FIELDS) == len(set(keys)) and list(defaults()) == keys
    cfg = parse_run_config({})
    for (section, name), f in zip(declared, FIELDS):
        # in declaration order, each key lands on its own attribute, with its default
        value = getattr(getattr(cfg, section) if section else cfg, name)
        assert value == (tuple(f.default.split(",")) if isinstance(value, tuple) else f.default), (f.key, name)


@dataclass(frozen=True)
class _Knobs:
    knob_size: int = setting(3, "a knob declared only here", check=lambda v: None if v > 0 else "a number > 0")
    names: tuple[str, ...] = setting("a,b", "names", parse=lambda v: tuple(v.split(",")))
    odd: float = setting(0.5, "a key off the naming rule", key="other.odd")


@dataclass(frozen=True)
class _Root:
    mode: str = setting("x", "a mode", ("x", "y"))
    knobs: _Knobs
    flat: dict = dataclasses.field(compare=False, default_factory=dict)


def test_a_setting_declared_in_a_dataclass_is_a_described_key_without_other_edits():
    fields = fields_of(_Root)
    assert [(f.key, f.kind, f.default, f.help, f.choices) for f in fields] == [
        ("mode", str, "x", "a mode", ("x", "y")),
        ("knobs.knob-size", int, 3, "a knob declared only here", ()),
        ("knobs.names", str, "a,b", "names", ()),  # parse=: read as a string
        ("other.odd", float, 0.5, "a key off the naming rule", ()),
    ]
    assert fields[1].check(0) == "a number > 0" and isinstance(fields[0], Field)
    built = config._construct(_Root, {"mode": "y", "knobs.knob-size": 4, "knobs.names": "p,q", "other.odd": 1.0},
                              flat={"k": 1})
    assert built == _Root("y", _Knobs(4, ("p", "q"), 1.0)) and built.flat == {"k": 1}


def test_the_key_list_defaults_and_docs_table_come_from_the_dataclasses(monkeypatch):
    monkeypatch.setattr(config, "FIELDS", fields_of(_Root))
    assert defaults() == {"mode": "x", "knobs.knob-size": 3, "knobs.names": "a,b", "other.odd": 0.5}
    assert "| `knobs.knob-size` | int | `3` | a number > 0 | a knob declared only here |" in markdown_table()
    assert pyproject_body().splitlines() == ['mode = "x"', "knobs.knob-size = 3", 'knobs.names = "a,b"',
                                             "other.odd = 0.5"]


def test_keys_off_the_naming_rule_reach_their_attributes_and_the_config_pickles():
    cfg = parse_run_config({"data.text-column": "body", "lora.target-modules": "q_proj, v_proj",
                            "data.tasks": "bbc-news,chatterbot-qa", "eval.batch-size": 3})
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # it crosses Ray processes
    assert cfg.data.columns == config.Columns(text="body")
    assert cfg.lora.target_modules == ("q_proj", "v_proj") and cfg.data.tasks == ("bbc-news", "chatterbot-qa")
    assert cfg.train.eval_batch_size == 3 and cfg.flat["eval.batch-size"] == 3
    assert cfg != parse_run_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]


def test_a_section_field_not_declared_with_setting_is_refused():
    @dataclass(frozen=True)
    class Bare:
        x: int

    @dataclass(frozen=True)
    class Root:
        bare: Bare

    # a plain field would have no key, help or default to come from
    with pytest.raises(TypeError, match=r"Bare\.x is not declared with setting\(\)"):
        fields_of(Root)
