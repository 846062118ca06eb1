"""What each agent holds, from the scenario's config: its view of the dataset and its batches.

Torch-free, so the server (which trains nothing) can read labels, folds and the batch rule without
importing torch. ``otm_fed.agent`` builds the WAE on top of this.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from otm_fed.cohorts import CohortError, anchor_candidates, split_samples
from otm_fed.config import ConfigError, resolve_config
from otm_fed.data import (DATASET_FILES, MultiViewDataset, dataset_file, load_dataset, load_multiview, make_synthetic,
                          normalise_view, view_orders)
from otm_fed.sites import SiteError, parse_site_split, parse_sites, sites_of, split_rows
from otm_fed.supervised import fold_indices, regression_target


@functools.lru_cache(maxsize=4)
def dataset_for(dataset: str, data_dir: str, synthetic_samples: int, synthetic_clusters: int,
                synthetic_dims: str, synthetic_weak_view: int, seed: int, synthetic_noise: float,
                synthetic_weak_noise: float) -> MultiViewDataset:
    """The scenario's dataset (cached per process: every message would otherwise reload it)."""
    if dataset == "synthetic":
        dims = tuple(int(d) for d in synthetic_dims.split(","))
        return make_synthetic(synthetic_samples, synthetic_clusters, dims, weak_view=synthetic_weak_view,
                              noise=synthetic_noise, weak_noise=synthetic_weak_noise, seed=seed)
    return load_dataset(dataset, data_dir or None)


def with_absolute_data(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with its data located by absolute path (``data-dir`` for a known name, else
    ``dataset`` itself), so every app finds it wherever Flower unpacks and runs it. A file not
    found is left as given, for loading to say where it was looked for."""
    path = dataset_file(config["dataset"], config["data-dir"] or None)
    if path is None or not path.is_file():
        return dict(config)
    if config["dataset"].lower() in DATASET_FILES:
        return {**config, "data-dir": str(path.parent.resolve())}
    return {**config, "dataset": str(path.resolve())}


def scenario_dataset(config: Mapping[str, Any]) -> MultiViewDataset:
    return dataset_for(config["dataset"], config["data-dir"], config["synthetic-samples"],
                       config["synthetic-clusters"], config["synthetic-dims"],
                       config["synthetic-weak-view"], config["seed"], config["synthetic-noise"],
                       config["synthetic-weak-noise"])


@functools.lru_cache(maxsize=4)
def regression_targets_for(synthetic_samples: int, synthetic_clusters: int, synthetic_dims: str,
                           synthetic_weak_view: int, seed: int) -> np.ndarray:
    """The synthetic scenario's continuous target, a function of its hidden factors."""
    dims = tuple(int(d) for d in synthetic_dims.split(","))
    _, hidden = make_synthetic(synthetic_samples, synthetic_clusters, dims, weak_view=synthetic_weak_view,
                               seed=seed, return_hidden=True)
    return regression_target(hidden, seed)


def scenario_targets(config: Mapping[str, Any]) -> np.ndarray:
    """Every sample's supervised target in file order: its class, or (regression) y(h)."""
    if config["task"] == "regression":
        return regression_targets_for(config["synthetic-samples"], config["synthetic-clusters"],
                                      config["synthetic-dims"], config["synthetic-weak-view"], config["seed"])
    return scenario_dataset(config).labels


def fold_test_targets(config: Mapping[str, Any]) -> np.ndarray:
    """The targets of the configured fold's test rows, in file order (aligned across modalities);
    the server reads them only in simulation, to score late fusion."""
    test = fold_indices(scenario_dataset(config).labels, config["n-folds"], config["fold"], config["seed"])[1]
    return scenario_targets(config)[test]


def view_normalisation(config: Mapping[str, Any], modality: int) -> str:
    """``normalisation`` is one method for all views or a comma list, one per view."""
    methods = [method.strip() for method in config["normalisation"].split(",")]
    return methods[modality] if len(methods) > 1 else methods[0]


def seeded_draws(dataset: str, seeds: Iterable[int]) -> Iterator[tuple[int, dict[str, Any], MultiViewDataset]]:
    """(seed, config, data) of a scenario per seed: every seed for the synthetic draw, only the
    first for a data file (its views do not depend on the seed)."""
    for seed in seeds:
        config = resolve_config(dataset, {"seed": str(seed)})
        yield seed, config, scenario_dataset(config)
        if config["dataset"] != "synthetic":
            return


def normalised_views(config: Mapping[str, Any], dataset: MultiViewDataset) -> list[np.ndarray]:
    """Every view of ``dataset`` normalised as its agent normalises it (file order, no permutation):
    what the benchmarks' raw-feature baselines read."""
    return [normalise_view(view, view_normalisation(config, m)) for m, view in enumerate(dataset.views)]


def check_fits(config: Mapping[str, Any], dataset: MultiViewDataset, n_modalities: int | None = None) -> None:
    """Refuse, before any round, a config that does not fit its data: more modalities than views,
    a normalisation list of the wrong length or one a view cannot take (tf-idf of negative values),
    a batch larger than an agent's training rows, more anchors than samples."""
    n_modalities = n_modalities or config["num-modalities"] or dataset.n_views
    name = dataset.name
    if n_modalities > dataset.n_views:
        raise ConfigError(f"{n_modalities} modalities asked for, but {name} has {dataset.n_views} views")
    methods = config["normalisation"].split(",")
    if len(methods) > 1 and len(methods) != dataset.n_views:
        raise ConfigError(f"normalisation lists {len(methods)} methods, but {name} has {dataset.n_views} views "
                          "(give one method for all views, or one per view)")
    for modality in range(n_modalities):
        try:
            normalise_view(dataset.views[modality], view_normalisation(config, modality))
        except ValueError as error:
            raise ConfigError(f"normalisation of view {modality} of {name}: {error}") from None
    check_samples(config, dataset)
    anchor_samples(config, dataset)
    site_counts(config, n_modalities)
    # the rows each modality's sites hold (a split that empties a site is refused here)
    n_train = min(sum(map(len, sites_rows(config, modality, dataset))) for modality in range(n_modalities))
    if config["batch-size"] > n_train:
        raise ConfigError(f"batch-size {config['batch-size']} is larger than the {n_train} training rows an agent of "
                          f"{name} holds; choose at most {n_train}: --set batch-size={n_train} "
                          f"(flwr run: --run-config batch-size={n_train})")


def check_samples(config: Mapping[str, Any], dataset: MultiViewDataset) -> None:
    """Settings that need every view to hold the same samples (one ``y``): ``overlap`` < 1 (it
    simulates different samples from such data), a supervised task, ``aligned`` batches."""
    if not dataset.same_samples and config["overlap"] < 1:
        raise ConfigError(f"overlap simulates different samples from data whose views hold the same ones (one y); "
                          f"{dataset.name} has one label vector per view already")
    source = f"overlap = {config['overlap']:g}" if dataset.same_samples else \
        f"{dataset.name} holds different samples in each view"
    different = not dataset.same_samples or config["overlap"] < 1
    if different and config["task"] != "clustering":
        raise ConfigError(f"task {config['task']} needs every view to hold the same samples ({source})")
    if different and config["aligned"]:
        raise ConfigError(f"aligned batches need every view to hold the same samples ({source})")


@dataclass
class ModalityData:
    """What agent m holds: training rows in its own order, and a labelled evaluation set; in
    supervised mode also the training targets (same order) and the test fold's targets."""

    train: np.ndarray
    evaluation: np.ndarray
    labels: np.ndarray  # local evaluation labels; they never leave the agent
    n_classes: int
    train_targets: np.ndarray | None = None
    evaluation_targets: np.ndarray | None = None
    anchors: np.ndarray | None = None  # the rows of the anchors it holds (``anchors`` > 0), in anchor order
    anchor_positions: np.ndarray | None = None  # their positions among the K anchors


def checked_anchor_ids(ids: np.ndarray, n_samples: int, source: str) -> np.ndarray:
    """Anchor ids (file rows, in anchor order) that exist and are distinct, else one ConfigError."""
    if ids.size == 0:
        raise ConfigError(f"{source}: no anchor ids")
    if ids.size > n_samples:
        raise ConfigError(f"{source}: {ids.size} anchors, but the data has only {n_samples} samples")
    unknown = ids[(ids < 0) | (ids >= n_samples)]
    if unknown.size:
        raise ConfigError(f"{source}: unknown anchor ids {unknown[:5].tolist()} (samples are 0..{n_samples - 1})")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ConfigError(f"{source}: duplicated anchor ids {values[counts > 1][:5].tolist()}")
    return ids


def anchor_samples(config: Mapping[str, Any], dataset: MultiViewDataset) -> np.ndarray | None:
    """Simulation: the ``anchors`` = K declared samples (a seeded draw, in anchor order), or None
    without anchors. From data whose views hold the same samples any sample may be drawn (with
    ``overlap`` < 1 the drawn ones are then held by every modality); from data with one label
    vector per view, only the samples its ids declare in view 0 and at least one other view
    (``anchor_candidates``)."""
    count = config["anchors"]
    if not count:
        return None
    rng = np.random.default_rng([config["seed"], 4])
    if dataset.same_samples:
        if count > dataset.n_samples:
            raise ConfigError(f"anchors = {count}, but the data has only {dataset.n_samples} samples")
        return rng.choice(dataset.n_samples, count, replace=False)
    n_modalities = config["num-modalities"] or dataset.n_views
    candidates = anchor_candidates(dataset.view_samples[:n_modalities])
    if count > len(candidates):
        raise ConfigError(f"anchors = {count}, but {dataset.name} declares only {len(candidates)} samples held in "
                          "view 0 and another view (sample ids ids0, ids1, ... shared by two views)")
    return candidates[rng.choice(len(candidates), count, replace=False)]


def find_values(ordered: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, at): whether each of ``values`` is in the sorted, distinct ``ordered``, and its
    index there (meaningful where found)."""
    at = np.minimum(np.searchsorted(ordered, values), max(len(ordered) - 1, 0))
    return (ordered[at] == values) if len(ordered) else np.zeros(len(values), bool), at


def held_anchors(dataset: MultiViewDataset, view: int, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, rows): the anchors among ``samples`` (in anchor order) that ``view`` holds, and
    their rows of the view."""
    if dataset.same_samples:
        return np.arange(len(samples)), samples
    order = np.argsort(dataset.view_samples[view])
    found, at = find_values(dataset.view_samples[view][order], samples)
    return np.flatnonzero(found), order[at[found]]


def read_anchor_file(path: str, n_samples: int, expected: int) -> tuple[np.ndarray, np.ndarray]:
    """A site's anchors (deployment), as (positions, rows): one line per anchor, in the anchor
    order every site shares, the row of the site's data file that holds it or ``-`` when this site
    does not (``#`` starts a comment); ``expected`` = the run's ``anchors`` lines."""
    try:
        lines = [line.split("#")[0].strip() for line in Path(path).read_text().splitlines()]
        entries = [line for line in lines if line]
        held = [(position, int(entry)) for position, entry in enumerate(entries) if entry != "-"]
    except (OSError, ValueError) as error:
        raise ConfigError(f"anchors file {path}: {error}") from error
    positions, rows = (np.array([pair[i] for pair in held], dtype=np.int64) for i in (0, 1))
    if held:
        checked_anchor_ids(rows, n_samples, f"anchors file {path}")
    if len(entries) != expected:
        raise ConfigError(f"anchors file {path}: {len(entries)} anchor lines, but the run has anchors = {expected}")
    return positions, rows


@functools.lru_cache(maxsize=2)
def site_dataset(data_path: str) -> MultiViewDataset:
    """A deployed site's own file (cached per process)."""
    return load_multiview(data_path)


def site_counts(config: Mapping[str, Any], n_modalities: int) -> tuple[int, ...]:
    """Sites per modality (``sites``), one-line ConfigError if it does not name every modality."""
    try:
        return parse_sites(config["sites"], n_modalities)
    except SiteError as error:
        raise ConfigError(str(error)) from None


def sites_rows(config: Mapping[str, Any], modality: int, dataset: MultiViewDataset) -> list[np.ndarray]:
    """Simulation: the rows of view m that each site of modality m holds, in the order its agent
    holds them: its modality's ``training_order``, or with several sites each one's share of it
    by ``site-split``."""
    order = training_order(config, modality, dataset)
    try:
        n_sites = sites_of(config["sites"], modality)
        if n_sites == 1:
            return [order]
        parts = split_rows(dataset.view_labels(modality)[order], n_sites, parse_site_split(config["site-split"]),
                           config["seed"], modality)
    except SiteError as error:
        raise ConfigError(str(error)) from None
    return [order[part] for part in parts]


def site_rows(config: Mapping[str, Any], modality: int, site: int, dataset: MultiViewDataset) -> np.ndarray:
    """Simulation: the rows of site s of modality m (``sites_rows``)."""
    rows = sites_rows(config, modality, dataset)
    if not 0 <= site < len(rows):
        raise ConfigError(f"site {site} of modality {modality} does not exist: sites = {config['sites']}")
    return rows[site]


def modality_data(config: Mapping[str, Any], modality: int, data_path: str = "", anchors_file: str = "",
                  site: int = 0) -> ModalityData:
    """View m of the scenario's dataset as agent (m, s) holds it: its rows (``site_rows``: its
    modality's samples, or its site's share of them), normalised with their own statistics only,
    in its own order, evaluated on the same rows in file order. Supervised: training rows are the
    fold's training rows (so permuted), evaluation rows its test fold in file order.

    In deployment a site reads its own file ``data_path`` instead: a single-view file is its
    modality's view; a multi-view file is read at view ``modality``. With ``anchors`` the agent
    also holds the anchor rows: the simulation's seeded draw, or in deployment its ``anchors_file``."""
    dataset = site_dataset(data_path) if data_path else scenario_dataset(config)
    view_index = 0 if data_path and dataset.n_views == 1 else modality
    if not 0 <= view_index < dataset.n_views:
        raise ValueError(f"modality {modality} does not exist: {dataset.name} has {dataset.n_views} views")
    method = view_normalisation(config, modality)
    if data_path and config["anchors"] and not anchors_file and sites_of(config["sites"], modality) > 1:
        raise ConfigError(f"anchors with several sites of modality {modality}: each site needs its anchors-file "
                          "(its row of each anchor, or - for one held at another site)")
    if anchors_file and config["anchors"]:
        positions, anchors = read_anchor_file(anchors_file, len(dataset.views[view_index]), config["anchors"])
    else:
        samples = anchor_samples(config, dataset)
        positions, anchors = (None, None) if samples is None else held_anchors(dataset, view_index, samples)
    if config["task"] == "clustering":
        own = training_order(config, modality, dataset, view_index) if data_path else \
            site_rows(config, modality, site, dataset)  # a deployed site's file holds its own rows only
        held = np.sort(own)
        rows = normalise_view(dataset.views[view_index][held], method)
        if anchors is not None:  # those this site holds (with several sites, each anchor is at one of them)
            mine, at = find_values(held, anchors)
            positions, anchors = positions[mine], rows[at[mine]]
        return ModalityData(rows[np.searchsorted(held, own)], rows, dataset.view_labels(view_index)[held],
                            dataset.n_classes, anchors=anchors, anchor_positions=positions)
    view = normalise_view(dataset.views[view_index], method)
    order = training_order(config, modality, dataset, view_index)
    test = fold_indices(dataset.labels, config["n-folds"], config["fold"], config["seed"])[1]
    targets = scenario_targets(config) if config["task"] == "regression" else dataset.labels
    return ModalityData(view[order], view[test], dataset.labels[test], dataset.n_classes, targets[order], targets[test],
                        None if anchors is None else view[anchors], positions)


def held_rows(config: Mapping[str, Any], dataset: MultiViewDataset, modality: int) -> np.ndarray:
    """Simulation: the rows of view m its modality holds, sorted: every row, or with ``overlap``
    < 1 its part of the samples (``otm_fed.cohorts.split_samples``; the anchors in every part)."""
    if not dataset.same_samples or config["overlap"] == 1:
        return np.arange(len(dataset.views[modality]))
    n_modalities = config["num-modalities"] or dataset.n_views
    try:
        return split_samples(dataset.labels, n_modalities, config["overlap"], config["class-shift"], config["seed"],
                             anchor_samples(config, dataset))[modality]
    except CohortError as error:
        raise ConfigError(str(error)) from None


def training_order(config: Mapping[str, Any], modality: int, dataset: MultiViewDataset,
                   view: int | None = None) -> np.ndarray:
    """Rows of agent m's training data, in the order it holds them: its modality's rows
    (``held_rows``; a deployed site's file ``view`` is read whole) in clustering, the fold's
    training rows in supervised mode, permuted by the agent's own view order unless the scenario
    is aligned."""
    if config["task"] != "clustering":
        rows = fold_indices(dataset.labels, config["n-folds"], config["fold"], config["seed"])[0]
    elif view is None:
        rows = held_rows(config, dataset, modality)
    else:
        rows = np.arange(len(dataset.views[view]))
    return rows[view_orders(len(rows), modality + 1, config["aligned"], config["seed"])[modality]]


def agent_stream(modality: int, site: int, *parts: int) -> list[int]:
    """The key of a seeded stream of agent (m, s): (m, parts...) for site 0, as a modality held at
    one site has always drawn, and (m, parts..., s) for the other sites of its modality."""
    return [modality, *parts, site] if site else [modality, *parts]


def batch_rows(n_rows: int, modality: int, round_number: int, batch_size: int, seed: int,
               aligned: bool = False, site: int = 0) -> np.ndarray:
    """Agent m's batch for a round: sorted rows of its own training order, drawn from its own
    seeded stream; in an aligned scenario every agent draws from one shared stream, so a batch
    holds the same samples, in the same order, in every modality; each site of a modality draws
    from its own stream (``agent_stream``). The one definition of a batch
    (the simulation-only alignment diagnostic reconstructs batches with it)."""
    rng = np.random.default_rng([seed, round_number] if aligned else [seed, *agent_stream(modality, site, round_number)])
    return np.sort(rng.choice(n_rows, size=min(batch_size, n_rows), replace=False))
