"""Run configuration: one flat table of keys, shared by scenarios, the CLI and Flower's run config.

Flower's ``--run-config`` only accepts keys declared under ``[tool.flwr.app.config]`` in
pyproject.toml; that table must equal ``DEFAULTS`` (a test checks it). A scenario file is a
TOML table of some of these keys; ``resolve_config`` lays defaults, then the scenario, then
``key=value`` overrides, and validates the result.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from otm_fed.data import NORMALISATIONS
from otm_fed.results import PROVENANCE
from otm_fed.sites import SiteError, parse_site_split, parse_sites
from otm_fed.supervised import LOSSES, TASKS, parse_noise_levels

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

@dataclass(frozen=True)
class Key:
    """One configuration key: its default, what it is for, and what it may be (``choices``, or a
    ``minimum`` for numbers; ``allowed`` states any other rule in words, checked in
    ``validate_config``)."""

    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    allowed: str = ""

    def allowed_values(self) -> str:
        """The allowed values in words, as ``otm-fed keys`` prints them."""
        if self.allowed:
            return self.allowed
        if self.choices:
            return " | ".join(self.choices)
        if isinstance(self.default, bool):
            return "true | false"
        if self.minimum is not None:
            return f">= {self.minimum:g}" + (" (integer)" if isinstance(self.default, int) else "")
        return TYPE_NAMES[type(self.default)]


# Every key of a run, in the order ``otm-fed keys`` prints them. Findings behind the chosen
# defaults: docs/findings/.
KEYS: dict[str, Key] = {
    # The data
    "scenario": Key("synthetic", "scenario name (scenarios/NAME.toml) or a .toml path; recorded in the run",
                    allowed="a scenario name or a .toml path"),
    "dataset": Key("synthetic", "data: synthetic, a shared data set's name (orl, movies, prokaryotic, handwritten), "
                   "or a .mat/.npz file", allowed="synthetic, a data set name, or a file path"),
    "data-dir": Key("", "folder of the data files (empty: $OTM_FED_DATA_DIR, else ../shared/data, else ./data)",
                    allowed="a folder path"),
    "aligned": Key(False, "every batch holds the same samples in every modality (false: each agent permutes and "
                   "draws its own rows, the unaligned setting)"),
    "normalisation": Key("zscore", "per-agent normalisation of its view, one for all or a comma list, one per view",
                         allowed=f"{' | '.join(NORMALISATIONS)}, or a comma list"),
    "synthetic-samples": Key(600, "synthetic data: number of samples", minimum=1),
    "synthetic-clusters": Key(6, "synthetic data: number of clusters in the hidden space", minimum=1),
    "synthetic-dims": Key("40,30,20", "synthetic data: features of each modality, a comma list (one modality each)",
                          allowed="a comma list of positive integers"),
    "synthetic-weak-view": Key(2, "synthetic data: the modality rendered with more noise (the weak view)", minimum=0),
    "synthetic-noise": Key(0.1, "synthetic data: standard deviation of the noise added to every view but the weak "
                           "one", minimum=0),
    "synthetic-weak-noise": Key(1.0, "synthetic data: standard deviation of the weak view's noise", minimum=0),
    "num-modalities": Key(0, "use the first N views of the data (0: all)", minimum=0),
    "n-clusters": Key(0, "clusters for k-means evaluation and the eq. 7 regulariser (0: the number of labels)",
                      minimum=0),
    # The federation
    "strategy": Key("otm", "the server's strategy: otm, local-only (no mixing), or your own 'package.module:Class'",
                    allowed="otm | local-only | package.module:Class"),
    "sites": Key("1", "sites holding each modality, each with its own samples: one count for all modalities, or a "
                 "comma list with one per modality (3,3,1)", allowed="a positive integer, or a comma list of them"),
    "site-split": Key("iid", "how simulation deals a modality's rows to its sites: iid, or dirichlet:ALPHA (each "
                      "class split in Dir(ALPHA) shares; small ALPHA, skewed sites)", allowed="iid | dirichlet:ALPHA"),
    "site-avg-every": Key(1, "rounds between averages (FedAvg) of the WAE weights across a modality's sites (0: "
                          "never, each site trains its own)", minimum=0),
    "overlap": Key(1.0, "simulation from data whose views hold the same samples: the share of samples (other than "
                   "anchors) held by every modality; the rest each live in one modality (1: every modality holds "
                   "every sample; 0: different patients)", allowed="0 to 1"),
    "class-shift": Key(0.0, "with overlap < 1: deal the samples held by one modality class by class in Dir(ALPHA) "
                       "proportions, so the modalities' class mixes differ (0: near-equal random parts)", minimum=0),
    "rounds": Key(30, "federated rounds", minimum=1),
    "batch-size": Key(128, "rows per agent per round (the batch it encodes and sends)", minimum=1),
    "local-steps": Key(5, "optimiser steps per round on the batch with the mix (then steps on fresh batches up to "
                       "'epochs')", minimum=1),
    "lr": Key(0.001, "Adam learning rate", allowed="> 0"),
    "latent-dim": Key(16, "latent width d of every WAE", minimum=1),
    "hidden-dim": Key(128, "hidden width of every WAE's encoder and decoder", minimum=1),
    "seed": Key(0, "seed of every random draw in the run (data, splits, batches, weights, masks)"),
    "round-timeout": Key(600.0, "seconds the server waits for the replies of a round", allowed="> 0"),
    "min-modalities": Key(2, "replies a round needs to go on (fewer: the round is skipped)", minimum=1),
    "piggyback": Key(True, "each TRAIN reply also carries the next round's codes (one exchange a round "
                     "instead of two)"),
    "eval-every": Key(5, "evaluate every N rounds (and always at the last)", minimum=1),
    "kmeans-init": Key(10, "k-means restarts when scoring an agent's codes", minimum=1),
    "fused-eval": Key(True, "simulation only: also score the concatenated aligned codes (needs labels of every "
                      "modality on the server's side, so never in deployment)"),
    "out-dir": Key("", "run folder (empty: a new runs/SCENARIO-STRATEGY-TIME folder)", allowed="a folder path"),
    "resume": Key(False, "continue the run in out-dir from its last completed round (set by --resume)"),
    # The mixer (paper eq. 1-7)
    "barycenter-size": Key(0, "rows N_B of the barycenter Z_B (0: the batch size)", minimum=0),
    "alpha": Key(0.5, "weight of the Wasserstein (feature) term against the GW (structure) term, eq. 2",
                 allowed="0 to 1"),
    "mask": Key("binary", "random masks M_m of eq. 3", choices=("binary", "dirichlet", "none")),
    "max-outer": Key(5, "outer iterations of the barycenter solver (Algorithm 1)", minimum=0),
    "beta": Key(1.0, "weight of the latent matching ||f_m(X_m) - Z~_m||^2, eq. 6", minimum=0),
    "eta": Key(0.0, "weight of the server's regulariser gradient G_m, eq. 7 (0: off; > 0 loads torch on the "
               "server)", minimum=0),
    # How an agent takes up its target Z~_m (otm_fed/uptake.py)
    "target-flow": Key(True, "a modality takes the mix back only while the other modalities' codes, carried onto "
                       "its rows, were better clustered than its own over the last gate-window rounds (label-free, "
                       "on the server)"),
    "target-guard": Key(True, "an agent refuses a target whose neighbourhoods agree with its own input rows' "
                        "no better than chance (label-free, per round)"),
    "mmd-weight": Key(0.0, "weight of the WAE-MMD prior penalty on the codes (Tolstikhin et al.)", minimum=0),
    "decode-mix": Key(False, "also reconstruct X_m from the decoded mix g_m(Z~_m), as the paper's public code does"),
    # Frame alignment and the gate (docs/findings/alignment-and-gate.md)
    "align": Key("procrustes", "map every modality's codes into one common frame before mixing (none: the paper's "
                 "OTM, codes as they come)", choices=("procrustes", "none")),
    "align-starts": Key(10, "Gromov-Wasserstein starts searched for a new frame", minimum=1),
    "align-refresh": Key(10, "search fresh frame starts every N rounds (else refine last round's)", minimum=1),
    "gate-threshold": Key(0.25, "a modality mixes once its mean label-free confidence over gate-window rounds "
                          "reaches this (0: every modality mixes from round 1)", minimum=0),
    "gate-window": Key(10, "rounds averaged by the gate", minimum=1),
    # Anchors (docs/findings/anchors.md)
    "anchors": Key(0, "K declared samples held in modality 0 and another (with one y: in every one) whose codes "
                   "fit the frames and gate the mix (0: none; they reveal that those samples are held in both)",
                   minimum=0),
    "anchor-gate-threshold": Key(0.5, "with anchors: a modality mixes once its anchors' mean correspondence over "
                                 "gate-window rounds reaches this", minimum=0),
    # Local training (docs/findings/local-training.md)
    "reconstruction": Key("auto", "reconstruction error: auto (cosine for l2/tfidf views, squared otherwise), "
                          "squared, cosine", choices=("auto", "squared", "cosine")),
    "neighbour-weight": Key(0.3, "weight of the neighbour term, relative to the view's null reconstruction error "
                            "(0: off)", minimum=0),
    "neighbours": Key(0, "k of the neighbour term's k-NN graph (0: N / 2C, between 1 and 10)", minimum=0),
    "epochs": Key(100, "at least this many passes over each agent's rows in the run (extra local steps a round)",
                  minimum=0),
    "shared-init": Key(False, "agents whose views have the same width start from the same encoder weights"),
    # Supervised mode (paper eq. 8)
    "task": Key("clustering", "what each agent learns: clustering (unsupervised), classification, regression",
                choices=TASKS),
    "fold": Key(0, "supervised: the test fold", minimum=0),
    "n-folds": Key(5, "supervised: folds of the data", minimum=2),
    "supervised-weight": Key(1.0, "supervised: weight of L_sup, eq. 8", minimum=0),
    "loss": Key("ce", "supervised loss: ce (classification), mae or mse (regression)",
                choices=tuple(loss for losses in LOSSES.values() for loss in losses)),
    "noise-levels": Key("0.0", "supervised: noise levels r of the test inputs, a comma list (noise energy / data "
                        "energy)", allowed="a comma list of numbers >= 0"),
    # Privacy
    "latent-clip": Key(0.0, "clip each code row to this L2 norm before it leaves an agent (0: off)", minimum=0),
    "latent-noise-multiplier": Key(0.0, "Gaussian noise of std multiplier x latent-clip on each code row before "
                                   "it leaves an agent (needs latent-clip)", minimum=0),
}
DEFAULTS: dict[str, Any] = {name: key.default for name, key in KEYS.items()}
CHOICES: dict[str, tuple[str, ...]] = {name: key.choices for name, key in KEYS.items() if key.choices}
BUILTIN_STRATEGIES = ("otm", "local-only")


def format_keys() -> str:
    """Every key with its default, allowed values and description: what ``otm-fed keys`` prints."""
    def shown(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else str(value)

    width = max(map(len, KEYS))
    lines = []
    for name, key in KEYS.items():
        lines.append(f"{name:<{width}}  {shown(key.default)}  [{key.allowed_values()}]")
        lines.append(f"{'':<{width}}  {key.help}")
    return "\n".join(lines)


def unknown_key_message(key: str) -> str:
    """The error for a key that is not a run key, naming the nearest valid one."""
    from difflib import get_close_matches

    nearest = get_close_matches(key, KEYS, n=1, cutoff=0.6)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    return f"unknown key {key!r}{hint} (otm-fed keys lists every key)"


class ConfigError(ValueError):
    """A scenario or override that does not fit the run configuration."""


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def parse_value(key: str, text: str, like: Any) -> Any:
    """A ``--set key=value`` string in the type of the default it replaces."""
    if isinstance(like, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
    else:
        try:
            return type(like)(text)
        except ValueError:
            pass
    raise ConfigError(f"{key} must be {TYPE_NAMES[type(like)]}, got {text!r}")


def scenario_path(name_or_path: str) -> Path:
    """A scenario by name (``scenarios/NAME.toml``) or by file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"scenario file {path} does not exist")
        return path
    path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
        raise ConfigError(f"unknown scenario {name_or_path!r}; known: {', '.join(known)}, or a .toml path")
    return path


def load_scenario(name_or_path: str) -> dict[str, Any]:
    path = scenario_path(name_or_path)
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"scenario {path} is not valid TOML: {error}") from error
    table.pop(PROVENANCE, None)  # a run folder's record of what it read, not a setting
    table.setdefault("scenario", path.stem)
    return table


def config_from_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The config inside a Flower app: the run config names a scenario (a name or a resolved
    config file); its other keys override the scenario where they differ from DEFAULTS (so
    ``flwr run . --run-config "scenario='orl' rounds=5"`` works; the CLI passes a resolved file)."""
    overrides = {key: value for key, value in run_config.items()
                 if key in DEFAULTS and key != "scenario" and value != DEFAULTS[key]}
    return resolve_config(str(run_config.get("scenario", DEFAULTS["scenario"])), overrides)


def resolve_config(scenario: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULTS <- scenario file <- overrides (values or ``key=value`` strings), validated."""
    config = dict(DEFAULTS)
    layers = [load_scenario(scenario)] if scenario else []
    layers.append(dict(overrides or {}))
    for layer in layers:
        for key, value in layer.items():
            if key not in DEFAULTS:
                raise ConfigError(unknown_key_message(key))
            config[key] = parse_value(key, value, DEFAULTS[key]) if isinstance(value, str) and not isinstance(
                DEFAULTS[key], str) else value
    return validate_config(config)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    for key, default in DEFAULTS.items():
        value = config[key]
        expected = (int, float) if isinstance(default, float) else type(default)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
            raise ConfigError(f"{key} must be {TYPE_NAMES[type(default)]}, got {value!r}")
        if isinstance(default, float):
            config[key] = float(value)
    for key, options in CHOICES.items():
        if config[key] not in options:
            raise ConfigError(f"{key} must be one of {options}, got {config[key]!r}")
    strategy = config["strategy"]
    if strategy not in BUILTIN_STRATEGIES and ":" not in strategy:
        raise ConfigError(f"strategy must be one of {BUILTIN_STRATEGIES} or an import path "
                          f"'package.module:Class', got {strategy!r}")
    for name, key in KEYS.items():
        if key.minimum is not None and config[name] < key.minimum:
            raise ConfigError(f"{name} must be at least {key.minimum:g}, got {config[name]}")
    if not 0.0 <= config["alpha"] <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {config['alpha']}")
    if config["lr"] <= 0:
        raise ConfigError(f"lr must be positive, got {config['lr']}")
    if config["round-timeout"] <= 0:
        raise ConfigError(f"round-timeout must be positive, got {config['round-timeout']}")
    if config["latent-noise-multiplier"] and not config["latent-clip"]:
        raise ConfigError("latent-noise-multiplier needs latent-clip > 0: the noise scale is multiplier x clip")
    validate_supervised(config)
    validate_normalisation(config)
    validate_sites(config)
    validate_overlap(config)
    return config


def validate_overlap(config: Mapping[str, Any]) -> None:
    """``overlap`` a share, and ``class-shift`` only where some samples live in one modality."""
    if not 0.0 <= config["overlap"] <= 1.0:
        raise ConfigError(f"overlap must lie in [0, 1], got {config['overlap']}")
    if config["class-shift"] and config["overlap"] == 1:
        raise ConfigError("class-shift deals the samples held by one modality, but overlap = 1 holds every sample in "
                          "every modality: set overlap < 1")


def validate_sites(config: Mapping[str, Any]) -> None:
    """``sites`` well formed (every count at least 1; whether it names every modality is checked
    once the data is read) and ``site-split`` one of its forms."""
    try:
        counts = parse_sites(config["sites"], len(config["sites"].split(",")))
        parse_site_split(config["site-split"])
    except SiteError as error:
        raise ConfigError(str(error)) from None
    if max(counts) > 1 and config["task"] != "clustering":
        raise ConfigError(f"several sites per modality (sites = {config['sites']}) run task = clustering only")


def gate_thresholds(config: Mapping[str, Any]) -> dict[str, float]:
    """What a modality's gate must reach, per statistic it reads (``FrameAlignment.readings``): its
    ``confidence`` reaches ``gate-threshold``, or with anchors ``anchor-gate-threshold`` (the
    anchors' correspondence). Empty when that threshold is 0: then every modality mixes."""
    threshold = config["anchor-gate-threshold"] if config["anchors"] else config["gate-threshold"]
    return {"confidence": threshold} if threshold else {}


def validate_normalisation(config: Mapping[str, Any]) -> None:
    """Every name of ``normalisation`` (one, or a comma list with one per view) is a known method;
    a misspelt one would otherwise fail on every agent in every round."""
    for method in config["normalisation"].split(","):
        if method.strip() not in NORMALISATIONS:
            raise ConfigError(f"normalisation {method.strip()!r} is not one of {', '.join(NORMALISATIONS)} "
                              f"(got {config['normalisation']!r}; a comma list gives one per view)")


def validate_supervised(config: Mapping[str, Any]) -> None:
    """Folds, the loss matching the task, regression's synthetic target, noise levels."""
    if config["fold"] >= config["n-folds"]:
        raise ConfigError(f"fold must lie in 0..{config['n-folds'] - 1}, got {config['fold']}")
    task = config["task"]
    if task in LOSSES and config["loss"] not in LOSSES[task]:
        raise ConfigError(f"loss for task {task} must be one of {LOSSES[task]}, got {config['loss']!r}")
    if task == "regression" and config["dataset"] != "synthetic":
        raise ConfigError("task regression needs dataset synthetic: its target comes from the hidden factors")
    try:
        parse_noise_levels(config["noise-levels"])
    except ValueError as error:
        raise ConfigError(str(error)) from error
