"""Multi-view datasets: loading, normalisation, synthetic generation and view orders.

File layouts read by :func:`load_multiview`:

* ``.mat`` (MATLAB v5/v6/v7, read with :func:`scipy.io.loadmat`): a cell array ``X`` with one
  entry per view (an ``M x 1`` or ``1 x M`` cell). Each entry is an ``N x D_m`` or ``D_m x N``
  matrix, dense or sparse, of any real numeric dtype; the orientation is decided from the
  label count ``N`` (a square ``N x N`` view is taken as ``N x D``). Labels are a row or
  column vector under the first present key of ``y``, ``Y``, ``gt``, ``truth``, ``label``,
  ``labels``; any integer values are remapped to ``0..C-1`` in sorted order.
  MATLAB v7.3 (HDF5) files are not supported: re-save them with ``save(..., '-v7')``.
* ``.npz``: dense arrays ``X0, X1, ..., X{M-1}`` (one per view, same orientation rule) and
  the labels under the same keys as above (normally ``y``).

Views that hold different samples (each site measured its own patients): per-view labels
``y0, y1, ..., y{M-1}`` in an ``.npz`` (in a ``.mat``, a cell ``Y`` with one label vector per
view), each as long as its view has rows; every view's labels are remapped together, so a class
means the same in every view, and a view may lack classes. Without sample ids every row is its
own sample. Optional per-view ids ``ids0, ids1, ...`` (a ``.mat`` cell ``ids``; integers or
strings, distinct within a view) declare rows held in several views as the same sample, who must
carry the same label in each; they are read in simulation only (anchors, the alignment
diagnostic) and never sent. A single ``y`` keeps its meaning: row i of every view is sample i.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

__all__ = [
    "DATA_DIR_ENV",
    "DATASET_FILES",
    "LABEL_KEYS",
    "NORMALISATIONS",
    "DatasetFormatError",
    "MultiViewDataset",
    "check_finite",
    "dataset_file",
    "load_dataset",
    "load_multiview",
    "make_synthetic",
    "normalise_view",
    "resolve_data_dir",
    "view_orders",
]

DATA_DIR_ENV = "OTM_FED_DATA_DIR"
"""Environment variable naming the directory that holds the dataset files."""

DATASET_FILES: dict[str, str] = {
    "orl": "ORL.mat",
    "movies": "Movies.mat",
    "prokaryotic": "Prokaryotic.mat",
    "handwritten": "Handwritten.mat",
}
"""Known dataset names and their file names inside the data directory."""

LABEL_KEYS: tuple[str, ...] = ("y", "Y", "gt", "truth", "label", "labels")
"""Keys searched, in order, for the ground-truth labels."""

NORMALISATIONS: tuple[str, ...] = ("zscore", "l2", "tfidf", "minmax", "none")
"""Valid ``method`` values of :func:`normalise_view`."""

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NPZ_VIEW_KEY = re.compile(r"X(\d+)")
_NPZ_VIEW_LABEL_KEY = re.compile(r"y(\d+)")
_NPZ_VIEW_IDS_KEY = re.compile(r"ids(\d+)")


class DatasetFormatError(ValueError):
    """A dataset file exists but does not follow a supported multi-view layout."""


@dataclass(frozen=True)
class MultiViewDataset:
    """Views of a set of samples plus every sample's class label.

    ``labels`` holds one label per sample. Without ``view_samples`` every view holds every sample
    in the same row order (row i of view m is sample i); with it, ``view_samples[m]`` names the
    sample of each row of view m (distinct, each in ``0..N-1``), so views may hold different
    samples and different numbers of rows. ``views`` are stored as C-contiguous ``float32``
    ``N_m x D_m`` arrays and ``labels`` as ``int64`` values ``0..C-1`` with every class present.
    """

    name: str
    views: list[np.ndarray]
    labels: np.ndarray
    view_samples: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if len(self.views) == 0:
            raise ValueError(f"dataset {self.name!r}: needs at least one view, got none")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(
                f"dataset {self.name!r}: labels must be a non-empty 1-D array, got shape {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"dataset {self.name!r}: labels must be integers, got dtype {labels.dtype}")
        n = labels.shape[0]
        present = np.unique(labels)
        if present[0] != 0 or present[-1] != present.size - 1:
            raise ValueError(
                f"dataset {self.name!r}: labels must be consecutive 0..C-1, got values "
                f"{present[:10].tolist()}{'...' if present.size > 10 else ''}"
            )
        samples = None if self.view_samples is None else [np.asarray(ids, dtype=np.int64) for ids in self.view_samples]
        if samples is not None and len(samples) != len(self.views):
            raise ValueError(f"dataset {self.name!r}: {len(samples)} sample lists for {len(self.views)} views")
        views = []
        for m, view in enumerate(self.views):
            view = np.ascontiguousarray(view, dtype=np.float32)
            if view.ndim != 2 or view.shape[1] == 0:
                raise ValueError(
                    f"dataset {self.name!r}: view {m} must be a 2-D N x D array with D >= 1, "
                    f"got shape {view.shape}"
                )
            if samples is None and view.shape[0] != n:
                raise ValueError(
                    f"dataset {self.name!r}: view {m} has {view.shape[0]} rows but there are "
                    f"{n} labels; all views need the same number of rows"
                )
            if samples is not None:
                _check_view_samples(self.name, m, samples[m], view.shape[0], n)
            check_finite(view, f"dataset {self.name!r}: view {m}")
            views.append(view)
        object.__setattr__(self, "views", views)
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "view_samples", samples)

    @property
    def n_samples(self) -> int:
        """Number of samples ``N`` (every view's rows when the views hold the same samples)."""
        return int(self.labels.shape[0])

    @property
    def n_views(self) -> int:
        """Number of views (modalities) ``M``."""
        return len(self.views)

    @property
    def n_classes(self) -> int:
        """Number of ground-truth classes ``C``."""
        return int(self.labels.max()) + 1

    @property
    def view_dims(self) -> tuple[int, ...]:
        """Feature dimension ``D_m`` of each view."""
        return tuple(int(v.shape[1]) for v in self.views)

    @property
    def same_samples(self) -> bool:
        """Every view holds every sample, row i being sample i (one ``y``)."""
        return self.view_samples is None

    def samples_of(self, view: int) -> np.ndarray:
        """The sample of each row of ``view`` (the row numbers themselves when views hold the same samples)."""
        return np.arange(self.n_samples) if self.view_samples is None else self.view_samples[view]

    def view_labels(self, view: int) -> np.ndarray:
        """The label of each row of ``view``."""
        return self.labels if self.view_samples is None else self.labels[self.view_samples[view]]


def _check_view_samples(name: str, view: int, samples: np.ndarray, n_rows: int, n_samples: int) -> None:
    """View m names one sample per row, each a distinct sample of ``0..N-1``."""
    if samples.shape != (n_rows,):
        raise ValueError(f"dataset {name!r}: view {view} has {n_rows} rows but {samples.size} sample ids")
    if samples.size and (samples.min() < 0 or samples.max() >= n_samples):
        raise ValueError(f"dataset {name!r}: view {view} names samples outside 0..{n_samples - 1}")
    if np.unique(samples).size != samples.size:
        raise ValueError(f"dataset {name!r}: view {view} holds a sample in two rows")


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Directory holding the dataset files.

    Order: the explicit ``data_dir``, else ``$OTM_FED_DATA_DIR``, else ``<repo>/../shared/data``
    if it exists (``<repo>`` is the parent of the ``otm_fed`` package), else ``./data``.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path("data")


def dataset_file(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The file a scenario's ``dataset`` names; None for the embedded ``synthetic`` data.

    A known name (``orl``, ``movies``, ``prokaryotic``, ``handwritten``; any case) is its file in
    :func:`resolve_data_dir`. Anything else is a file path: absolute, else relative to the
    current directory where it exists there, else relative to :func:`resolve_data_dir` (so
    ``data-dir`` and ``$OTM_FED_DATA_DIR`` serve file names too).
    """
    key = name.lower()
    if key == "synthetic":
        return None
    if key in DATASET_FILES:
        return resolve_data_dir(data_dir) / DATASET_FILES[key]
    path = Path(name).expanduser()
    if path.is_dir():
        raise DatasetFormatError(f"{name} is a directory, not a data file: give a .mat or .npz file (a directory "
                                 "holding the dataset files is named with --set data-dir=DIR)")
    if not (path.is_file() or path.suffix.lower() in (".mat", ".npz") or os.sep in name):
        raise ValueError(
            f"unknown dataset {name!r}; known names are {sorted(DATASET_FILES)}, "
            "or the path of a .mat/.npz file"
        )
    if path.is_absolute() or path.exists():
        return path
    return resolve_data_dir(data_dir) / path


def load_dataset(name: str, data_dir: str | Path | None = None) -> MultiViewDataset:
    """Load a known dataset or a file (found as :func:`dataset_file` says).

    Known datasets are named by their lower-case key; files by their stem.
    """
    path = dataset_file(name, data_dir)
    if path is None:
        raise ValueError("the synthetic dataset is generated (otm_fed.data.make_synthetic), not loaded")
    if not path.is_file():
        given = name.lower() in DATASET_FILES or Path(name).expanduser().is_absolute()
        relative = "" if given else (
            f" (looked for {name!r} in the current directory and in the data directory {resolve_data_dir(data_dir)})")
        raise FileNotFoundError(
            f"dataset file not found: {path}{relative}; {'' if given else 'give an absolute path, or '}name the "
            f"directory holding the dataset files with --set data-dir=DIR (flwr run: --run-config "
            f"\"data-dir='/absolute/dir'\") or the environment variable {DATA_DIR_ENV}"
        )
    return load_multiview(path, name=name.lower() if name.lower() in DATASET_FILES else None)


def load_multiview(path: str | Path, name: str | None = None) -> MultiViewDataset:
    """Read a multi-view ``.mat`` or ``.npz`` file (layouts in the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        raw_views, raw_labels, raw_ids = _read_mat(path)
    elif suffix == ".npz":
        raw_views, raw_labels, raw_ids = _read_npz(path)
    else:
        raise DatasetFormatError(f"{path}: expected a .mat or .npz file, found suffix {path.suffix!r}")
    if isinstance(raw_labels, list):
        labels, view_samples, rows = _own_samples(path, raw_views, raw_labels, raw_ids)
    elif raw_ids is not None:
        raise DatasetFormatError(f"{path}: sample ids go with one label vector per view (y0, y1, ...); with one y, "
                                 "row i of every view is sample i already")
    else:
        labels, view_samples = _parse_labels(path, raw_labels), None
        rows = [labels.shape[0]] * len(raw_views)
    views = [_orient_view(path, m, v, n_rows) for m, (v, n_rows) in enumerate(zip(raw_views, rows))]
    try:
        return MultiViewDataset(name=name or path.stem, views=views, labels=labels, view_samples=view_samples)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: {exc}") from None


def _own_samples(path: Path, raw_views: list[object], raw_labels: list[object],
                 raw_ids: list[object] | None) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Views holding their own samples: (every sample's label, each view's samples, each view's
    row count). Labels of all views are remapped together to ``0..C-1``; without ids the samples
    are every view's rows in turn, with ids the distinct ids of all views, one label each."""
    if len(raw_labels) != len(raw_views):
        raise DatasetFormatError(f"{path}: {len(raw_views)} views but {len(raw_labels)} label vectors; give one per "
                                 "view (y0, y1, ...)")
    values = [_label_values(path, raw, f"the labels of view {m}") for m, raw in enumerate(raw_labels)]
    rows = [len(v) for v in values]
    _, joint = np.unique(np.concatenate(values), return_inverse=True)
    bounds = np.cumsum([0, *rows])
    if raw_ids is None:
        return joint.astype(np.int64), [np.arange(bounds[m], bounds[m + 1]) for m in range(len(rows))], rows
    if len(raw_ids) != len(raw_views):
        raise DatasetFormatError(f"{path}: {len(raw_views)} views but {len(raw_ids)} id vectors; give one per view "
                                 "(ids0, ids1, ...) or none")
    ids = [_sample_ids(path, m, raw, rows[m]) for m, raw in enumerate(raw_ids)]
    if len({view_ids.dtype.kind for view_ids in ids}) > 1:
        raise DatasetFormatError(f"{path}: sample ids must be all integers or all strings across views")
    universe, sample_of_row = np.unique(np.concatenate(ids), return_inverse=True)
    labels = np.full(len(universe), -1, dtype=np.int64)
    for m in range(len(rows)):
        samples, view_labels = sample_of_row[bounds[m]:bounds[m + 1]], joint[bounds[m]:bounds[m + 1]]
        clash = (labels[samples] >= 0) & (labels[samples] != view_labels)
        if clash.any():
            raise DatasetFormatError(f"{path}: sample id {universe[samples[clash][0]].item()!r} has different labels in view "
                                     f"{m} and an earlier view; a sample carries one label")
        labels[samples] = view_labels
    return labels, [sample_of_row[bounds[m]:bounds[m + 1]] for m in range(len(rows))], rows


def _sample_ids(path: Path, view: int, raw: object, n_rows: int) -> np.ndarray:
    """View m's sample ids: a vector of integers or strings, one per row, distinct."""
    arr = np.asarray(raw)
    if arr.dtype.kind in "US" or (arr.dtype == object and all(isinstance(x, str) for x in arr.ravel())):
        arr = np.char.strip(arr.astype(str).ravel())
    elif arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        arr = arr.ravel().astype(np.int64)
    else:
        raise DatasetFormatError(f"{path}: sample ids of view {view} must be integers or strings, found dtype {arr.dtype}")
    if arr.size != n_rows:
        raise DatasetFormatError(f"{path}: view {view} has {n_rows} labels but {arr.size} sample ids")
    values, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise DatasetFormatError(f"{path}: sample id {values[counts > 1][0].item()!r} names two rows of view {view}")
    return arr


def _layout_error(path: Path, found: str) -> DatasetFormatError:
    """The standard 'expected ... found ...' error for a file with the wrong keys."""
    views = "arrays X0, X1, ..." if path.suffix.lower() == ".npz" else "a cell array 'X' of per-view matrices"
    return DatasetFormatError(
        f"{path}: expected {views} and labels under one of {'/'.join(LABEL_KEYS)} (or one vector per view); "
        f"found {found}"
    )


def _find_labels(path: Path, contents: dict[str, object]) -> object:
    """The value under the first label key present, or a layout error."""
    for key in LABEL_KEYS:
        if key in contents:
            return contents[key]
    raise _layout_error(path, f"keys {sorted(contents)}")


def _is_hdf5(path: Path) -> bool:
    """True if the file carries an HDF5 signature at offset 0 or 512 (MATLAB v7.3)."""
    with path.open("rb") as fh:
        head = fh.read(512 + len(_HDF5_SIGNATURE))
    return head.startswith(_HDF5_SIGNATURE) or head[512:].startswith(_HDF5_SIGNATURE)


def _read_mat(path: Path) -> tuple[list[object], object, list[object] | None]:
    """Raw per-view matrices, the raw labels (one array, or a list with one per view from a cell
    ``Y``) and the per-view sample ids of a cell ``ids`` (or None) of a MATLAB v5 file."""
    v73_error = DatasetFormatError(
        f"{path}: this is a MATLAB v7.3 (HDF5) file, which is not supported; "
        "re-save it in MATLAB with save(..., '-v7') or convert it to .npz"
    )
    if _is_hdf5(path):
        raise v73_error
    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to a v7.3 header
        raise v73_error from None
    except Exception as exc:  # scipy raises many types (IndexError, ValueError, ...) for malformed files
        detail = f" ({exc})" if isinstance(exc, scipy.io.matlab.MatReadError) else ""
        raise DatasetFormatError(
            f"{path}: not a MATLAB .mat file that can be read{detail}; expected MATLAB v5 to v7.2 "
            "(save(..., '-v7')) or an .npz file"
        ) from None
    contents = {k: v for k, v in contents.items() if not k.startswith("__")}
    if "X" not in contents:
        raise _layout_error(path, f"keys {sorted(contents)}")
    labels = _find_labels(path, contents)
    cell = contents["X"]
    if not (isinstance(cell, np.ndarray) and cell.dtype == object):
        raise _layout_error(path, f"'X' of type {type(cell).__name__} "
                                  f"{getattr(cell, 'dtype', '')} instead of a cell array")
    if cell.ndim != 2 or min(cell.shape) != 1:
        raise DatasetFormatError(
            f"{path}: expected 'X' to be an M x 1 or 1 x M cell of views, found a {cell.shape} cell"
        )
    return list(cell.ravel()), _cell_or_array(path, labels, "labels"), _cell_or_array(path, contents.get("ids"), "ids")


def _cell_or_array(path: Path, value: object, what: str) -> object:
    """A MATLAB cell (one entry per view) as a list; any other value as it is."""
    if not (isinstance(value, np.ndarray) and value.dtype == object):
        return value
    if value.ndim != 2 or min(value.shape) != 1:
        raise DatasetFormatError(f"{path}: expected {what} as an M x 1 or 1 x M cell, one per view, found a "
                                 f"{value.shape} cell")
    return list(value.ravel())


def _read_npz(path: Path) -> tuple[list[object], object, list[object] | None]:
    """Raw per-view arrays, the raw labels (``y``, or ``y0, y1, ...`` as a list) and the per-view
    sample ids ``ids0, ids1, ...`` (or None) of an ``.npz`` file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DatasetFormatError(
            f"{path}: expected an .npz archive of plain numeric arrays; "
            f"reading failed with {type(exc).__name__}: {exc}"
        ) from None
    indices = _numbered(path, contents, _NPZ_VIEW_KEY, "X")
    if not indices:
        raise _layout_error(path, f"keys {sorted(contents)}")
    views = [contents[f"X{i}"] for i in indices]
    label_indices = _numbered(path, contents, _NPZ_VIEW_LABEL_KEY, "y")
    id_indices = _numbered(path, contents, _NPZ_VIEW_IDS_KEY, "ids")
    ids = [contents[f"ids{i}"] for i in id_indices] if id_indices else None
    if not label_indices:
        return views, _find_labels(path, contents), ids
    single = [key for key in LABEL_KEYS if key in contents]
    if single:
        raise DatasetFormatError(f"{path}: found both {single[0]!r} and y0, y1, ...: give one y (every view holds the "
                                 "same samples) or one label vector per view (y0, y1, ...), not both")
    return views, [contents[f"y{i}"] for i in label_indices], ids


def _numbered(path: Path, contents: dict[str, object], pattern: re.Pattern, stem: str) -> list[int]:
    """The numbers of the keys ``stem0, stem1, ...``, refused in one line if one is skipped."""
    indices = sorted(int(m.group(1)) for k in contents if (m := pattern.fullmatch(k)))
    if indices != list(range(len(indices))):
        raise DatasetFormatError(
            f"{path}: expected keys {stem}0..{stem}{len(indices) - 1} without gaps, "
            f"found {stem}{f', {stem}'.join(map(str, indices))}"
        )
    return indices


def _parse_labels(path: Path, raw: object) -> np.ndarray:
    """A label vector remapped to ``0..C-1`` (sorted order of the original values)."""
    _, labels = np.unique(_label_values(path, raw, "labels"), return_inverse=True)
    return labels.astype(np.int64)


def _label_values(path: Path, raw: object, what: str) -> np.ndarray:
    """A non-empty numeric, integer-valued label vector as given (not yet remapped)."""
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biuf" or arr.size == 0 or sum(s > 1 for s in arr.shape) > 1:
        raise DatasetFormatError(
            f"{path}: expected {what} as a non-empty numeric row or column vector, "
            f"found an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    arr = arr.ravel()
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise DatasetFormatError(
            f"{path}: expected integer-valued {what}, found non-integer or non-finite values"
        )
    return arr


def _orient_view(path: Path, index: int, raw: object, n: int) -> np.ndarray:
    """A dense ``N x D`` array from an ``N x D`` or ``D x N`` (possibly sparse) matrix, ``N`` the
    view's label count."""
    if scipy.sparse.issparse(raw):
        raw = raw.toarray()
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biuf" or arr.ndim != 2:
        raise DatasetFormatError(
            f"{path}: expected view {index} to be a 2-D real numeric matrix, "
            f"found shape {arr.shape} and dtype {arr.dtype}"
        )
    if arr.shape[0] != n:
        if arr.shape[1] != n:
            raise DatasetFormatError(
                f"{path}: expected view {index} to be N x D or D x N with N = {n} (the number of "
                f"its labels), found shape {arr.shape}"
            )
        arr = arr.T
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_finite(arr: np.ndarray, what: str) -> None:
    """The one NaN/inf check: a ValueError naming ``what`` and the count of bad entries."""
    n_bad = int(np.count_nonzero(~np.isfinite(arr)))
    if n_bad:
        raise ValueError(f"{what} contains {n_bad} non-finite values (NaN/inf)")


def normalise_view(x: np.ndarray, method: str) -> np.ndarray:
    """Normalise one ``N x D`` view using statistics of ``x`` alone; returns ``float32``.

    * ``zscore``: per feature, mean 0 and (population) std 1; constant features become 0.
    * ``l2``: each row scaled to unit L2 norm; all-zero rows stay zero.
    * ``tfidf``: for non-negative counts: ``tf * (ln((1 + N) / (1 + df)) + 1)`` (scikit-learn's
      smoothed ``TfidfTransformer``), then row L2.
    * ``minmax``: per feature to ``[0, 1]``; constant features become 0.
    * ``none``: a ``float32`` copy.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; valid methods are {list(NORMALISATIONS)}")
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"expected a 2-D N x D view with N >= 1, got shape {arr.shape}")
    check_finite(arr, "view")
    if method == "zscore":
        out = _scale_columns(arr - arr.mean(axis=0), arr.std(axis=0), _constant_columns(arr))
    elif method == "minmax":
        out = _scale_columns(arr - arr.min(axis=0), np.ptp(arr, axis=0), _constant_columns(arr))
    elif method == "l2":
        out = _l2_rows(arr)
    elif method == "tfidf":
        if np.any(arr < 0):
            raise ValueError("tfidf expects non-negative counts, but the view has negative values")
        df = np.count_nonzero(arr, axis=0)
        idf = np.log((1.0 + arr.shape[0]) / (1.0 + df)) + 1.0
        out = _l2_rows(arr * idf)
    else:
        out = arr
    return np.ascontiguousarray(out, dtype=np.float32)


def _constant_columns(arr: np.ndarray) -> np.ndarray:
    """Boolean mask of features that take a single value."""
    return arr.max(axis=0) == arr.min(axis=0)


def _scale_columns(centred: np.ndarray, scale: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """``centred / scale`` per column, with constant columns set to 0."""
    out = centred / np.where(constant, 1.0, scale)
    out[:, constant] = 0.0
    return out


def _l2_rows(arr: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms > 0, norms, 1.0)


def make_synthetic(
    n_samples: int = 600,
    n_clusters: int = 6,
    view_dims: tuple[int, ...] = (40, 30, 20),
    latent_dim: int = 8,
    weak_view: int | None = 2,
    noise: float = 0.1,
    weak_noise: float = 1.0,
    seed: int = 0,
    return_hidden: bool = False,
) -> MultiViewDataset | tuple[MultiViewDataset, np.ndarray]:
    """Synthetic multi-view clusters with one deliberately weak view.

    Generative model (every random draw is seeded from ``seed``):

    1. ``n_clusters`` centres ``c_k ~ N(0, I)`` in a hidden space of size ``latent_dim``.
    2. Balanced labels (class sizes differ by at most one), shuffled; hidden points
       ``h_i = c_{y_i} + 0.25 * N(0, I)``.
    3. View ``m`` renders ``h`` with its own random 2-layer MLP
       ``tanh(h W1 + b1) W2`` (hidden width 64, weights ``N(0, 1/fan_in)``) and adds Gaussian
       noise of std ``noise`` (``weak_noise`` for the view ``weak_view``; ``None`` = no weak view).

    Returns the dataset, or ``(dataset, hidden)`` with ``hidden`` the ``N x latent_dim``
    ``float32`` points ``h`` when ``return_hidden`` is true.
    """
    if n_clusters < 1 or n_samples < n_clusters:
        raise ValueError(f"need 1 <= n_clusters <= n_samples, got {n_clusters} and {n_samples}")
    if len(view_dims) == 0 or min(view_dims) < 1 or latent_dim < 1:
        raise ValueError(
            f"need at least one view, positive view_dims and latent_dim; got {view_dims}, {latent_dim}"
        )
    if weak_view is not None and not 0 <= weak_view < len(view_dims):
        raise ValueError(f"weak_view must be None or in 0..{len(view_dims) - 1}, got {weak_view}")
    width = 64
    rng = np.random.default_rng([seed, 0])
    centres = rng.normal(size=(n_clusters, latent_dim))
    labels = rng.permutation(np.arange(n_samples) % n_clusters)
    hidden = centres[labels] + 0.25 * rng.normal(size=(n_samples, latent_dim))
    views = []
    for m, dim in enumerate(view_dims):
        view_rng = np.random.default_rng([seed, 1, m])
        w1 = view_rng.normal(scale=1.0 / np.sqrt(latent_dim), size=(latent_dim, width))
        b1 = view_rng.normal(scale=0.1, size=width)
        w2 = view_rng.normal(scale=1.0 / np.sqrt(width), size=(width, dim))
        std = weak_noise if m == weak_view else noise
        rendered = np.tanh(hidden @ w1 + b1) @ w2
        views.append(rendered + std * view_rng.normal(size=rendered.shape))
    dataset = MultiViewDataset(name="synthetic", views=views, labels=labels)
    if return_hidden:
        return dataset, hidden.astype(np.float32)
    return dataset


def view_orders(n_samples: int, n_views: int, aligned: bool, seed: int) -> list[np.ndarray]:
    """Per-view row orders: the identity when ``aligned``, else independent seeded permutations.

    View ``m``'s permutation is drawn from ``np.random.default_rng([seed, m])``.
    """
    if aligned:
        return [np.arange(n_samples) for _ in range(n_views)]
    return [np.random.default_rng([seed, m]).permutation(n_samples) for m in range(n_views)]
