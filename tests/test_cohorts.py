"""Different patients at each site: data whose views hold different samples (per-view labels and
sample ids), the simulated split of a paired data set (overlap, class shift, declared anchors),
and what an agent, the anchors and the alignment diagnostic make of it."""

import functools
import json

import numpy as np
import pytest
import scipy.io

from launcher.cli import main
from otm_fed.alignment import alignment_scores, batch_sample_ids
from otm_fed.cohorts import CohortError, anchor_candidates, split_samples
from otm_fed.config import ConfigError, resolve_config
from otm_fed.data import DatasetFormatError, load_multiview, make_synthetic, normalise_view
from otm_fed.scenario import anchor_samples, check_fits, held_rows, modality_data, scenario_dataset
from tests.test_cli import refusal

LABELS = np.repeat(np.arange(4), [50, 30, 15, 5])  # 100 samples, unbalanced classes


def omics_file(path, rows=(60, 72, 64), ids: bool = False, seed: int = 5, shared=(20, 20)):
    """The shape of a single-cell multi-omics set measured on different cells: three views of 30
    features, different cell counts, one label vector per view (labels 1..4). With ``ids`` the
    first ``shared[m - 1]`` cells of view m > 0 are declared view 0's first ones (20: all three
    views hold the same 20 cells)."""
    data = make_synthetic(sum(rows), 4, (30, 30, 30), weak_view=None, seed=seed)
    parts = np.split(np.random.default_rng(0).permutation(data.n_samples), np.cumsum(rows)[:-1])
    arrays = {}
    for m, part in enumerate(parts):
        if ids:
            part = np.concatenate([parts[0][:shared[m - 1]], part[shared[m - 1]:]]) if m else part
            arrays[f"ids{m}"] = np.array([f"cell-{i}" for i in part])
        arrays[f"X{m}"], arrays[f"y{m}"] = data.views[m][part], data.labels[part] + 1
    np.savez(path, **arrays)
    return path


def test_per_view_labels_load_views_of_different_samples(tmp_path):
    data = load_multiview(omics_file(tmp_path / "omics.npz"))
    assert not data.same_samples and [len(v) for v in data.views] == [60, 72, 64]
    assert data.n_samples == 196 and data.n_classes == 4  # without ids every row is its own sample
    assert sorted(np.concatenate(data.view_samples).tolist()) == list(range(196))
    raw = np.load(tmp_path / "omics.npz")
    for m in range(3):  # labels 1..4 remapped together: class c is the same in every view
        np.testing.assert_array_equal(data.view_labels(m), raw[f"y{m}"] - 1)


def test_a_view_may_lack_a_class_and_labels_stay_one_code_across_views(tmp_path):
    np.savez(tmp_path / "two.npz", X0=np.ones((3, 2)), X1=np.ones((4, 2)), y0=[10, 30, 30], y1=[20, 20, 30, 10])
    data = load_multiview(tmp_path / "two.npz")
    assert data.view_labels(0).tolist() == [0, 2, 2] and data.view_labels(1).tolist() == [1, 1, 2, 0]


def test_sample_ids_declare_the_rows_views_share(tmp_path):
    data = load_multiview(omics_file(tmp_path / "omics.npz", ids=True))
    assert data.n_samples == 196 - 2 * 20  # the first 20 cells of views 1 and 2 are view 0's
    assert len(anchor_candidates(data.view_samples)) == 20
    raw = np.load(tmp_path / "omics.npz")
    shared = raw["ids0"][:20]
    for m in (1, 2):
        assert np.array_equal(data.view_samples[m][:20], data.view_samples[0][:20])
        assert raw[f"ids{m}"][:20].tolist() == shared.tolist()


def test_mat_cells_x_and_y_hold_views_of_different_samples(tmp_path):
    views = np.empty((2, 1), dtype=object)
    labels = np.empty((2, 1), dtype=object)
    views[0, 0], views[1, 0] = np.arange(10.0).reshape(5, 2), np.arange(12.0).reshape(3, 4)
    labels[0, 0], labels[1, 0] = np.array([[1, 2, 1, 2, 2]]), np.array([[2, 2, 1]])
    scipy.io.savemat(tmp_path / "cells.mat", {"X": views, "Y": labels})
    data = load_multiview(tmp_path / "cells.mat")
    assert [v.shape for v in data.views] == [(5, 2), (3, 4)]
    assert data.view_labels(1).tolist() == [1, 1, 0] and not data.same_samples


@pytest.mark.parametrize("arrays, message", [
    (dict(X0=np.ones((3, 2)), X1=np.ones((4, 2)), y0=[0, 1, 0]), "2 views but 1 label vectors"),
    (dict(X0=np.ones((3, 2)), X1=np.ones((4, 2)), y0=[0, 1, 0], y2=[1]), "y0..y1 without gaps"),
    (dict(X0=np.ones((3, 2)), y=[0, 1, 0], y0=[0, 1, 0]), "found both 'y' and y0"),
    (dict(X0=np.ones((3, 2)), X1=np.ones((4, 2)), y0=[0, 1, 0], y1=[0, 1, 0]), "N = 3 .the number of its labels."),
    (dict(X0=np.ones((3, 2)), y=[0, 1, 0], ids0=[1, 2, 3]), "sample ids go with one label vector per view"),
    (dict(X0=np.ones((2, 2)), X1=np.ones((2, 2)), y0=[0, 1], y1=[0, 1], ids0=[1, 2]), "2 views but 1 id vectors"),
    (dict(X0=np.ones((2, 2)), X1=np.ones((2, 2)), y0=[0, 1], y1=[0, 1], ids0=[1, 1], ids1=[1, 2]),
     "sample id 1 names two rows of view 0"),
    (dict(X0=np.ones((2, 2)), X1=np.ones((2, 2)), y0=[0, 1], y1=[1, 0], ids0=[7, 8], ids1=[7, 9]),
     "sample id 7 has different labels in view 1"),
    (dict(X0=np.ones((2, 2)), X1=np.ones((2, 2)), y0=[0, 1], y1=[1, 0], ids0=[7, 8], ids1=["a", "b"]),
     "all integers or all strings"),
    (dict(X0=np.ones((2, 2)), X1=np.ones((2, 2)), y0=[0, 1], y1=[1, 0], ids0=[7, 8], ids1=[7]),
     "view 1 has 2 labels but 1 sample ids"),
])
def test_every_mismatch_of_a_per_view_file_is_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetFormatError, match=message) as refused:
        load_multiview(tmp_path / "bad.npz")
    assert "\n" not in str(refused.value)


def test_overlap_one_holds_every_sample_everywhere_and_zero_deals_each_sample_once():
    assert all(np.array_equal(part, np.arange(100)) for part in split_samples(LABELS, 3, 1.0, 0.0, seed=0))
    parts = split_samples(LABELS, 3, 0.0, 0.0, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100)) and [len(p) for p in parts] == [34, 33, 33]
    half = split_samples(LABELS, 3, 0.5, 0.0, seed=0)
    assert len(functools.reduce(np.intersect1d, half)) == 50 and len(np.unique(np.concatenate(half))) == 100
    again = split_samples(LABELS, 3, 0.5, 0.0, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(half, again))


def test_declared_samples_are_held_by_every_modality_and_overlap_counts_the_rest():
    declared = np.array([3, 50, 97])
    parts = split_samples(LABELS, 3, 0.0, 0.0, seed=1, declared=declared)
    assert np.array_equal(functools.reduce(np.intersect1d, parts), np.sort(declared))
    assert sum(len(p) for p in parts) == 97 + 3 * 3


def test_class_shift_gives_modalities_different_class_mixes():
    labels = np.repeat(np.arange(4), 100)

    def spread(parts):  # mean total-variation distance of a modality's class mix from the whole's
        return np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=4) / len(p) - 0.25).sum() for p in parts])
    shifted = np.mean([spread(split_samples(labels, 3, 0.0, 0.5, seed)) for seed in range(5)])
    random = np.mean([spread(split_samples(labels, 3, 0.0, 0.0, seed)) for seed in range(5)])
    assert shifted > 0.2 > 0.05 > random
    with pytest.raises(CohortError, match="leave modality . without samples"):
        split_samples(np.zeros(2, dtype=int), 3, 0.0, 0.5, seed=0)


def test_an_agent_holds_and_scores_only_its_modality_s_samples():
    config = resolve_config("synthetic", {"overlap": "0", "class-shift": "0.5", "batch-size": "64", "seed": "2"})
    dataset = scenario_dataset(config)
    held = [held_rows(config, dataset, m) for m in range(3)]
    assert sorted(np.concatenate(held).tolist()) == list(range(600))
    for m in range(3):
        data = modality_data(config, m)
        assert len(data.train) == len(data.evaluation) == len(held[m])
        np.testing.assert_array_equal(data.labels, dataset.labels[held[m]])
        assert abs(data.evaluation.mean(0)).max() < 1e-5  # normalised with its own rows' statistics


def test_anchors_are_declared_samples_held_in_every_modality_at_the_same_position():
    config = resolve_config("synthetic", {"overlap": "0", "anchors": "30", "batch-size": "64"})
    dataset = scenario_dataset(config)
    anchors = anchor_samples(config, dataset)
    for m in range(3):
        data, held = modality_data(config, m), held_rows(config, dataset, m)
        assert set(anchors) <= set(held)
        np.testing.assert_array_equal(data.anchors, data.evaluation[np.searchsorted(held, anchors)])


def test_anchors_of_a_per_view_file_are_drawn_from_its_declared_samples(tmp_path):
    path = omics_file(tmp_path / "omics.npz", ids=True)
    config = resolve_config("synthetic", {"dataset": str(path), "anchors": "8", "batch-size": "32"})
    dataset = scenario_dataset(config)
    anchors = anchor_samples(config, dataset)
    assert set(anchors) <= set(anchor_candidates(dataset.view_samples))
    for m in range(3):  # the same cells, in one order, each view's own (normalised) features of them
        rows = [int(np.flatnonzero(dataset.view_samples[m] == sample)[0]) for sample in anchors]
        np.testing.assert_array_equal(modality_data(config, m).anchors, normalise_view(dataset.views[m], "zscore")[rows])
    with pytest.raises(ConfigError, match="declares only 20 samples held in view 0 and another view"):
        anchor_samples(resolve_config("synthetic", {"dataset": str(path), "anchors": "21"}), dataset)


def test_pairs_declared_in_some_views_are_anchors_of_the_views_that_hold_them(tmp_path):
    """View 1 holds 20 of view 0's cells, view 2 only 10 of them: all 20 are anchors; view 2 sends
    the codes of its 10, at their positions in the shared order."""
    path = omics_file(tmp_path / "omics.npz", ids=True, shared=(20, 10))
    config = resolve_config("synthetic", {"dataset": str(path), "anchors": "20", "batch-size": "32"})
    dataset = scenario_dataset(config)
    anchors = anchor_samples(config, dataset)
    assert sorted(anchors) == sorted(anchor_candidates(dataset.view_samples))
    for m, count in ((0, 20), (1, 20), (2, 10)):
        data = modality_data(config, m)
        assert len(data.anchor_positions) == len(data.anchors) == count
        held = anchors[data.anchor_positions]  # the samples at those positions, each a row of view m
        rows = [int(np.flatnonzero(dataset.view_samples[m] == sample)[0]) for sample in held]
        np.testing.assert_array_equal(data.anchors, normalise_view(dataset.views[m], "zscore")[rows])
    assert set(anchors[modality_data(config, 2).anchor_positions]) == set(dataset.view_samples[2]) & set(anchors)


def test_with_several_sites_each_anchor_is_held_by_one_site_of_every_modality():
    config = resolve_config("synthetic", {"sites": "3", "anchors": "30", "batch-size": "64"})
    for m in range(3):
        sites = [modality_data(config, m, site=s) for s in range(3)]
        positions = np.concatenate([data.anchor_positions for data in sites])
        assert sorted(positions.tolist()) == list(range(30))
        assert all(0 < len(data.anchors) < 30 for data in sites)


def test_the_alignment_diagnostic_names_samples_so_only_shared_cells_count_as_counterparts(tmp_path):
    path = omics_file(tmp_path / "omics.npz", ids=True)
    config = resolve_config("synthetic", {"dataset": str(path), "batch-size": "60"})
    dataset = scenario_dataset(config)
    ids = batch_sample_ids(config, dataset, [0, 1], 1, 7)
    assert len(ids[0]) == len(ids[1]) == 60
    shared = [(i, int(np.flatnonzero(ids[1] == sample)[0])) for i, sample in enumerate(ids[0]) if sample in ids[1]]
    assert 0 < len(shared) <= 20  # only the declared cells can be one sample in two views
    plans = [np.eye(60) / 60, np.eye(60) / 60]  # row i of view 0 sends all its mass to row i of view 1
    scores = alignment_scores(plans, ids, dataset.labels)
    assert scores["true_mass"] == pytest.approx(np.mean([i == j for i, j in shared]))
    same_class = dataset.labels[ids[0]] == dataset.labels[ids[1]]
    assert scores["class_mass"] == pytest.approx(same_class.mean())


@pytest.mark.parametrize("overrides, message", [
    ({"class-shift": "0.5"}, "class-shift deals the samples held by one modality, but overlap = 1"),
    ({"overlap": "1.5"}, "overlap must lie in"),
])
def test_bad_cohort_settings_are_refused_before_any_data_is_read(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("synthetic", overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"overlap": "0.5", "task": "classification"}, "task classification needs every view to hold the same samples"),
    ({"overlap": "0.5", "aligned": "true"}, "aligned batches need every view to hold the same samples"),
    ({"overlap": "0", "batch-size": "250"}, "batch-size 250 is larger than the 200 training rows"),
])
def test_cohort_settings_that_do_not_fit_the_data_are_refused(overrides, message):
    config = resolve_config("synthetic", overrides)
    with pytest.raises(ConfigError, match=message):
        check_fits(config, scenario_dataset(config))


def test_overlap_is_refused_for_a_file_whose_views_hold_their_own_samples(tmp_path, capsys):
    path = omics_file(tmp_path / "omics.npz")
    err = refusal(capsys, ["simulate", "--data", str(path), "--set", "overlap=0.5", "--rounds", "1"])
    assert "has one label vector per view already" in err


def test_the_multi_omics_shape_runs_end_to_end_with_defaults(tmp_path, capsys):
    path = omics_file(tmp_path / "omics.npz", rows=(150, 181, 162))
    assert main(["simulate", "--data", str(path), "--engine", "inprocess", "--rounds", "2",
                 "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    final = summary["final"]
    assert len(final["acc_per_modality"]) == 3 and min(final["acc_per_modality"]) > 0.25  # 4 classes
    assert "fused_acc" not in final  # no row is known to be one sample in every view


def test_a_deployed_site_holds_every_row_of_its_own_file_whatever_the_topology(tmp_path):
    """In deployment a site's file is its share already: it is not split again by ``sites``."""
    own = make_synthetic(50, 3, (12,), weak_view=None, seed=4)
    np.savez(tmp_path / "site.npz", X0=own.views[0], y=own.labels)
    config = resolve_config("synthetic", {"sites": "3", "batch-size": "16"})
    data = modality_data(config, 2, str(tmp_path / "site.npz"), site=1)
    assert len(data.train) == len(data.evaluation) == 50
    np.testing.assert_array_equal(data.labels, own.labels)
    assert sorted(map(tuple, data.train.tolist())) == sorted(map(tuple, data.evaluation.tolist()))
