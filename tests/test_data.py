"""Tests for otm_fed.data: loaders, layouts, errors, normalisation, synthetic data, view orders."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from sklearn.feature_extraction.text import TfidfTransformer

from otm_fed import data
from otm_fed.data import (
    DATA_DIR_ENV,
    DatasetFormatError,
    MultiViewDataset,
    load_dataset,
    load_multiview,
    make_synthetic,
    normalise_view,
    resolve_data_dir,
    view_orders,
)
from otm_fed.metrics import kmeans_scores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# name -> (N, view dims, class sizes in label order), from shared/data/README.md and the files.
REAL_DATASETS = {
    "orl": (400, (288, 288), [10] * 40),
    "movies": (617, (1878, 1398), [21, 37, 45, 7, 36, 46, 41, 35, 44, 39, 36, 35, 39, 42, 40, 33, 41]),
    "prokaryotic": (551, (393, 3, 438), [313, 91, 35, 112]),
    "handwritten": (2000, (216, 76, 64, 6, 240, 47), [200] * 10),
}


def _cell(*views: object, row: bool = False) -> np.ndarray:
    """A MATLAB cell (object array) holding ``views``, as M x 1 or 1 x M."""
    cell = np.empty((1, len(views)) if row else (len(views), 1), dtype=object)
    for i, view in enumerate(views):
        cell.flat[i] = view
    return cell


def _save_mat(path: Path, **contents: object) -> Path:
    scipy.io.savemat(path, contents)
    return path


@pytest.fixture
def two_views() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two small aligned views (N=7) and 1-based labels with 3 classes."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 4)), rng.integers(0, 5, size=(7, 3)).astype(np.uint8), np.array(
        [1, 1, 2, 2, 3, 3, 3]
    )


# --- real files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_DATASETS))
def test_real_dataset_shapes_and_labels(name: str) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    n, dims, class_sizes = REAL_DATASETS[name]
    ds = load_dataset(name, data_dir=SHARED_DATA)
    assert ds.name == name
    assert ds.n_samples == n
    assert ds.view_dims == dims
    assert ds.n_views == len(dims)
    assert ds.n_classes == len(class_sizes)
    assert np.bincount(ds.labels).tolist() == class_sizes
    assert ds.labels.dtype == np.int64
    assert all(v.dtype == np.float32 and v.shape == (n, d) for v, d in zip(ds.views, dims))


def test_real_orl_views_identical_and_movies_counts() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    orl = load_dataset("ORL", data_dir=SHARED_DATA)
    np.testing.assert_array_equal(orl.views[0], orl.views[1])
    movies = load_dataset("movies", data_dir=SHARED_DATA)
    for view in movies.views:
        assert view.min() == 0 and np.all(view == np.round(view))  # counts, suited to tf-idf
        assert np.count_nonzero(view) / view.size < 0.02


# --- .mat layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("label_key", ["y", "Y", "gt", "truth", "label", "labels"])
@pytest.mark.parametrize("row_cell", [False, True])
def test_mat_label_keys_and_cell_orientation(tmp_path, two_views, label_key, row_cell) -> None:
    a, b, y = two_views
    path = _save_mat(tmp_path / "d.mat", X=_cell(a, b, row=row_cell), **{label_key: y[:, None]})
    ds = load_multiview(path)
    assert ds.name == "d"
    assert ds.view_dims == (4, 3)
    np.testing.assert_allclose(ds.views[0], a.astype(np.float32))
    np.testing.assert_array_equal(ds.views[1], b)
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2, 2, 2])


def test_mat_transposed_and_sparse_views(tmp_path, two_views) -> None:
    a, b, y = two_views
    sparse_b = scipy.sparse.csr_matrix(b.T)  # D x N and sparse
    path = _save_mat(tmp_path / "t.mat", X=_cell(a.T, sparse_b), y=y - 1)
    ds = load_multiview(path, name="custom")
    assert ds.name == "custom"
    assert ds.view_dims == (4, 3)
    np.testing.assert_allclose(ds.views[0], a.astype(np.float32))
    np.testing.assert_array_equal(ds.views[1], b)
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2, 2, 2])


def test_mat_square_view_is_taken_as_n_by_d(tmp_path) -> None:
    square = np.arange(9.0).reshape(3, 3)
    ds = load_multiview(_save_mat(tmp_path / "s.mat", X=_cell(square), y=np.array([0, 1, 1])))
    np.testing.assert_array_equal(ds.views[0], square)


def test_mat_non_consecutive_labels_are_remapped_in_order(tmp_path, two_views) -> None:
    a, b, _ = two_views
    raw = np.array([30, -2, 7, 30, 7, -2, 100])
    ds = load_multiview(_save_mat(tmp_path / "n.mat", X=_cell(a, b), gt=raw))
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 2, 1, 0, 3])
    assert ds.n_classes == 4


def test_npz_layout(tmp_path, two_views) -> None:
    a, b, y = two_views
    path = tmp_path / "d.npz"
    np.savez(path, X0=a, X1=b.T, y=y)
    ds = load_multiview(path)
    assert ds.view_dims == (4, 3)
    np.testing.assert_array_equal(ds.views[1], b)
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2, 2, 2])
    assert load_dataset(str(path)).view_dims == (4, 3)


# --- errors ---------------------------------------------------------------------------------


def test_missing_x_names_file_expectation_and_keys(tmp_path, two_views) -> None:
    a, _, y = two_views
    path = _save_mat(tmp_path / "nox.mat", data=a, y=y)
    with pytest.raises(DatasetFormatError) as info:
        load_multiview(path)
    message = str(info.value)
    assert str(path) in message and "cell array 'X'" in message and "['data', 'y']" in message


def test_missing_labels(tmp_path, two_views) -> None:
    a, b, _ = two_views
    with pytest.raises(DatasetFormatError, match=r"y/Y/gt/truth.*found keys \['X'\]"):
        load_multiview(_save_mat(tmp_path / "noy.mat", X=_cell(a, b)))


def test_x_not_a_cell(tmp_path, two_views) -> None:
    a, _, y = two_views
    with pytest.raises(DatasetFormatError, match="instead of a cell array"):
        load_multiview(_save_mat(tmp_path / "plain.mat", X=a, y=y))


def test_mismatched_rows_across_views(tmp_path, two_views) -> None:
    a, _, y = two_views
    with pytest.raises(DatasetFormatError, match=r"view 1 .*N = 7.*\(5, 3\)"):
        load_multiview(_save_mat(tmp_path / "mm.mat", X=_cell(a, np.ones((5, 3))), y=y))


def test_nan_values(tmp_path, two_views) -> None:
    a, b, y = two_views
    a = a.copy()
    a[2, 1] = np.nan
    with pytest.raises(DatasetFormatError, match=r"view 0 contains 1 non-finite values \(NaN/inf\)"):
        load_multiview(_save_mat(tmp_path / "nan.mat", X=_cell(a, b), y=y))


def test_non_integer_labels(tmp_path, two_views) -> None:
    a, b, _ = two_views
    with pytest.raises(DatasetFormatError, match="integer-valued labels"):
        load_multiview(_save_mat(tmp_path / "fl.mat", X=_cell(a, b), y=np.linspace(0, 1, 7)))


@pytest.mark.parametrize("offset", [0, 512])
def test_hdf5_v73_file(tmp_path, offset) -> None:
    path = tmp_path / "v73.mat"
    path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(offset, b" ")[:offset] + b"\x89HDF\r\n\x1a\n" + bytes(600))
    with pytest.raises(DatasetFormatError, match=r"v7\.3 \(HDF5\)") as info:
        load_multiview(path)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_v73_header_without_signature_mapped_from_scipy(tmp_path) -> None:
    header = b"MATLAB 7.3 MAT-file".ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
    path = tmp_path / "hdr.mat"
    path.write_bytes(header + bytes(200))  # scipy raises NotImplementedError for this
    with pytest.raises(DatasetFormatError, match=r"v7\.3"):
        load_multiview(path)


def test_garbage_mat_and_npz(tmp_path) -> None:
    for name in ("junk.mat", "junk.npz"):
        path = tmp_path / name
        path.write_bytes(b"not a data file " * 20)
        with pytest.raises(DatasetFormatError, match=re.escape(str(path))):
            load_multiview(path)


def test_npz_view_keys_with_gap(tmp_path, two_views) -> None:
    a, b, y = two_views
    path = tmp_path / "gap.npz"
    np.savez(path, X0=a, X2=b, y=y)
    with pytest.raises(DatasetFormatError, match="without gaps"):
        load_multiview(path)


def test_missing_file_hint(tmp_path, monkeypatch) -> None:
    """The hint names what exists: ``--set data-dir=`` and the environment variable (simulate has
    no ``--data-dir`` flag), and where a relative name was looked for."""
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        load_multiview(tmp_path / "absent.mat")
    with pytest.raises(FileNotFoundError, match=f"ORL.mat.*--set data-dir=DIR.*{DATA_DIR_ENV}") as error:
        load_dataset("orl", data_dir=tmp_path)
    assert "--data-dir" not in str(error.value)
    monkeypatch.chdir(tmp_path)
    looked = f"'mine.mat' in the current directory and in the data directory {tmp_path}"
    with pytest.raises(FileNotFoundError, match=looked):
        load_dataset("mine.mat", data_dir=tmp_path)


def test_relative_file_names_are_found_in_the_data_dir(tmp_path, monkeypatch, two_views) -> None:
    """``data-dir`` (or $OTM_FED_DATA_DIR) serves file names as it serves the known names; a file in
    the current directory comes first."""
    a, b, y = two_views
    (tmp_path / "data").mkdir()
    _save_mat(tmp_path / "data" / "mine.mat", X=_cell(a, b), y=y)
    monkeypatch.chdir(tmp_path)
    assert load_dataset("mine.mat", data_dir=tmp_path / "data").view_dims == (a.shape[1], b.shape[1])
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    assert load_dataset("mine.mat").n_views == 2
    _save_mat(tmp_path / "mine.mat", X=_cell(a), y=y)
    assert load_dataset("mine.mat").n_views == 1


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="handwritten.*movies.*orl.*prokaryotic"):
        load_dataset("mnist")


def test_unsupported_suffix(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("1,2\n")
    with pytest.raises(DatasetFormatError, match="expected a .mat or .npz"):
        load_multiview(path)


def test_dataset_validation() -> None:
    ok = MultiViewDataset("ok", [np.ones((3, 2))], np.array([0, 1, 0]))
    assert (ok.n_samples, ok.n_views, ok.n_classes, ok.view_dims) == (3, 1, 2, (2,))
    assert ok.views[0].dtype == np.float32
    with pytest.raises(ValueError, match="view 1 has 2 rows but there are 3 labels"):
        MultiViewDataset("bad", [np.ones((3, 2)), np.ones((2, 2))], np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        MultiViewDataset("bad", [np.array([[np.inf], [0.0]])], np.array([0, 1]))
    with pytest.raises(ValueError, match="consecutive"):
        MultiViewDataset("bad", [np.ones((2, 1))], np.array([1, 2]))


# --- data directory -------------------------------------------------------------------------


def test_resolve_data_dir_precedence(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv(DATA_DIR_ENV)
    repo_shared = Path(data.__file__).resolve().parents[1].parent / "shared" / "data"
    assert resolve_data_dir() == (repo_shared if repo_shared.is_dir() else Path("data"))


# --- normalisation --------------------------------------------------------------------------


def test_zscore_per_feature_with_constant_feature() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(5, 3, 50), np.full(50, 2.5), rng.integers(0, 4, 50)])
    z = normalise_view(x, "zscore")
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, [0, 2]].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, [0, 2]].std(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(z[:, 1], 0)


def test_statistics_come_from_the_array_itself() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    shifted = x * 4.0 + 100.0  # another client's data in other units
    np.testing.assert_allclose(normalise_view(shifted, "zscore"), normalise_view(x, "zscore"), atol=1e-5)
    np.testing.assert_allclose(normalise_view(shifted, "minmax"), normalise_view(x, "minmax"), atol=1e-6)


def test_l2_rows_and_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 1.0]])
    out = normalise_view(x, "l2")
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0], [-2**-0.5, 2**-0.5]], atol=1e-7)


def test_tfidf_matches_sklearn_and_rejects_negative() -> None:
    counts = np.random.default_rng(3).poisson(0.4, size=(30, 12)).astype(np.uint8)
    counts[5] = 0
    expected = TfidfTransformer().fit_transform(counts).toarray()
    out = normalise_view(counts, "tfidf")
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.all(out[5] == 0)
    with pytest.raises(ValueError, match="non-negative"):
        normalise_view(-np.ones((2, 2)), "tfidf")


def test_minmax_and_none() -> None:
    x = np.array([[1.0, 7.0], [3.0, 7.0], [2.0, 7.0]])
    np.testing.assert_allclose(normalise_view(x, "minmax"), [[0, 0], [1, 0], [0.5, 0]])
    none = normalise_view(x, "none")
    assert none.dtype == np.float32 and none is not x
    np.testing.assert_array_equal(none, x)


def test_unknown_normalisation_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="zscore.*l2.*tfidf.*minmax.*none"):
        normalise_view(np.ones((2, 2)), "pca")


# --- synthetic data -------------------------------------------------------------------------


def test_synthetic_shapes_balance_and_determinism() -> None:
    ds, hidden = make_synthetic(n_samples=100, n_clusters=6, seed=4, return_hidden=True)
    assert ds.view_dims == (40, 30, 20)
    assert ds.n_samples == 100 and ds.n_classes == 6
    assert hidden.shape == (100, 8) and hidden.dtype == np.float32
    assert sorted(np.bincount(ds.labels).tolist()) == [16, 16, 17, 17, 17, 17]
    again = make_synthetic(n_samples=100, n_clusters=6, seed=4)
    other = make_synthetic(n_samples=100, n_clusters=6, seed=5)
    np.testing.assert_array_equal(ds.labels, again.labels)
    for v, w, u in zip(ds.views, again.views, other.views):
        np.testing.assert_array_equal(v, w)
        assert not np.allclose(v, u)


def test_synthetic_weak_view_is_weaker() -> None:
    ds = make_synthetic(n_samples=300, seed=0)
    scores = [
        kmeans_scores(normalise_view(v, "zscore"), ds.labels, ds.n_classes, n_init=4)["purity"]
        for v in ds.views
    ]
    strong = min(scores[0], scores[1])
    assert strong > 0.9
    assert strong > scores[2] + 0.15
    assert scores[2] > 1.0 / ds.n_classes + 0.1


def test_synthetic_rejects_bad_weak_view() -> None:
    with pytest.raises(ValueError, match="weak_view"):
        make_synthetic(weak_view=3)


# --- view orders ----------------------------------------------------------------------------


def test_view_orders() -> None:
    aligned = view_orders(50, 3, aligned=True, seed=1)
    assert all(np.array_equal(o, np.arange(50)) for o in aligned)
    orders = view_orders(50, 3, aligned=False, seed=1)
    assert all(np.array_equal(np.sort(o), np.arange(50)) for o in orders)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    np.testing.assert_array_equal(orders[2], np.random.default_rng([1, 2]).permutation(50))
    np.testing.assert_array_equal(orders[0], view_orders(50, 3, aligned=False, seed=1)[0])
    assert not np.array_equal(orders[0], view_orders(50, 3, aligned=False, seed=2)[0])
