"""Run configuration: defaults match Flower's app config, scenarios resolve, bad input is refused."""

import tomllib
from pathlib import Path

import pytest

from otm_fed.config import (DEFAULTS, KEYS, SCENARIO_DIR, ConfigError, config_from_run_config, format_keys, gate_thresholds,
                            resolve_config)

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_app_config_equals_defaults():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == DEFAULTS


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_resolves(path):
    config = resolve_config(path.stem)
    assert config["scenario"] == path.stem


def test_overrides_are_typed_from_strings():
    config = resolve_config("synthetic", {"rounds": "7", "alpha": "0.25", "aligned": "true", "mask": "none"})
    assert (config["rounds"], config["alpha"], config["aligned"], config["mask"]) == (7, 0.25, True, "none")


def test_run_config_overrides_scenario_where_it_differs_from_defaults():
    config = config_from_run_config({**DEFAULTS, "scenario": "synthetic", "rounds": 3})
    assert config["rounds"] == 3


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"colour": "red"}, "unknown key"),
        ({"rounds": "many"}, "rounds must be an integer, got 'many'"),
        ({"alpha": "half"}, "alpha must be a number"),
        ({"normalisation": "tf-idf"}, "normalisation 'tf-idf' is not one of zscore, l2, tfidf"),
        ({"normalisation": "l2,zcore"}, "normalisation 'zcore'"),
        ({"alpha": "1.5"}, r"alpha must lie in \[0, 1\]"),
        ({"mask": "soft"}, "mask must be one of"),
        ({"strategy": "fedavg"}, "strategy must be one of"),
        ({"batch-size": "0"}, "batch-size must be at least 1"),
        ({"aligned": "maybe"}, "aligned must be true or false"),
        ({"task": "ranking"}, "task must be one of"),
        ({"task": "classification", "loss": "mae"}, "loss for task classification"),
        ({"fold": "5"}, r"fold must lie in 0\.\.4"),
        ({"n-folds": "1"}, "n-folds must be at least 2"),
        ({"noise-levels": "0.1,0.2"}, "first noise level must be 0"),
    ],
)
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("synthetic", overrides)


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: .*synthetic"):
        resolve_config("no-such-scenario")


def test_with_anchors_the_gate_reads_its_own_thresholds():
    assert gate_thresholds(resolve_config("synthetic")) == {"confidence": DEFAULTS["gate-threshold"]}
    assert gate_thresholds(resolve_config("synthetic", {"anchors": "10"})) == {"confidence": DEFAULTS["anchor-gate-threshold"]}
    assert gate_thresholds(resolve_config("synthetic", {"anchors": "10", "anchor-gate-threshold": "0"})) == {}
    assert gate_thresholds(resolve_config("synthetic", {"gate-threshold": "0"})) == {}


def test_every_key_has_a_description_and_allowed_values_that_keys_prints():
    printed = format_keys()
    for name, key in KEYS.items():
        assert key.help.strip(), f"{name} has no description"
        assert f"{name} " in printed and key.help in printed and key.allowed_values() in printed
    assert KEYS["mask"].allowed_values() == "binary | dirichlet | none"
    assert KEYS["rounds"].allowed_values() == ">= 1 (integer)"


def test_an_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match="unknown key 'gate-treshold'; did you mean 'gate-threshold'"):
        resolve_config("synthetic", {"gate-treshold": "0.3"})
    with pytest.raises(ConfigError, match="unknown key 'zzz' \\(otm-fed keys lists every key\\)"):
        resolve_config("synthetic", {"zzz": "1"})
    for removed in ("anchor-gate", "structure-weight", "neighbour-dof"):  # refuted experiments, not options
        with pytest.raises(ConfigError, match=f"unknown key '{removed}'"):
            resolve_config("synthetic", {removed: "1"})
