"""Unpaired alignment of the modalities, measured: the server's label-free frames against SCOT.

Every data set here is co-registered (row i of every view is the same sample), so the true
correspondence is known and an alignment made without it can be scored. Methods (one row per
data set, seed and method):

* ``scot``: SCOT (Demetci et al., J Comput Biol 2022), reimplemented on the raw views: rows L2-
  normalised, per view the k-NN graph (correlation metric, connectivity: k neighbours counting the
  row itself, every edge of length 1), its shortest-path distances C_x, C_y scaled by their
  maximum, the entropic Gromov-Wasserstein coupling Gamma (square loss, uniform marginals,
  epsilon), and the barycentric projection of view 0 onto view 1, x^_i = sum_j Gamma_ij y_j /
  sum_j Gamma_ij. Published settings: SNARE-seq k = 110, epsilon = 1e-3; scGEM k = 35,
  epsilon = 5e-3; elsewhere SCOT's default k = min(N / 5, 50), epsilon = 1e-3. SCOT draws nothing
  at random: on a data file it is computed once and its row repeated for every seed.
* ``frames-local-only``: the server's label-free fit (``otm_fed.frames.align_frames``, called as
  the strategy calls it, with no earlier rotations, the run's ``align-starts`` and the rng of the
  round after the last) on ALL rows of every agent's final codes of a local-only run.
* ``frames-otm``: the same on the final codes of a default OTM run.
* ``rigid-ceiling``: orthogonal Procrustes on the TRUE pairs of the local-only codes (each view
  centred and scaled as ``align_frames`` does): the best a rigid frame can do, not a method.

Scores, per pair of modality 0 and modality m (with more than two modalities, as in Prokaryotic
and Handwritten, every modality is aligned to modality 0 and the row holds the mean over the
pairs; SCOT projects view 0 onto view m, as it does onto view 1):

* FOSCTTM (SCOT's ``evals.py``): for each sample, the fraction of the other view's samples closer
  to it than its true match (a tie is not closer), over the N - 1 others, averaged over both
  directions and all samples; 0 is perfect, 0.5 chance. ``foscttm_plan``: after the barycentric
  projection through the plan (SCOT's coupling; for the frames the exact OT plan the server's fit
  ends on, between phi_m(Z_m) and phi_0(Z_0) in the common frame; for the ceiling the exact OT
  plan at its rotation). ``foscttm_rigid``: of the rigid map alone, phi_m(Z_m) against phi_0(Z_0).
  ``foscttm`` is the headline: the plan's for ``scot`` and the frames, the rigid map's for the ceiling.
* Label transfer (SCOT's ``transfer_accuracy`` with n = 1): a 1-NN classifier fitted on the
  target side (view 1 for SCOT, modality 0 for the frames) predicts the projected side's labels.
* Class mass: the plan's mass between samples of the same class (chance: sum_c p_c^2).
* Seconds of the alignment alone (``run_seconds``: the training run's).

The training runs go through the ServerApp and ClientApp on the in-process engine, into
``--runs-dir`` (one folder per data set, strategy and seed); a folder that already holds a
finished run with its ``eval-codes.npz`` is read, not run again. The final codes in
``eval-codes.npz`` are each agent's encoding of its whole view in file order, so their rows are
co-registered as the file's are. SNARE-seq and scGEM have no scenario file: they run with the
defaults, ``normalisation = zscore`` and 100 rounds, unaligned.

    python benchmarks/unpaired_alignment.py --datasets scgem,snare-seq --seeds 0,1,2 [--methods scot,...]
        [--json PATH] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import ot
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from scipy.spatial.distance import cdist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otm_fed.config import resolve_config  # noqa: E402
from otm_fed.data import DATASET_FILES, load_dataset, load_multiview, resolve_data_dir  # noqa: E402
from otm_fed.frames import align_frames, anchor_rotation, standardise  # noqa: E402
from otm_fed.results import EVAL_CODES_FILE, SUMMARY_FILE, new_folder, write_json  # noqa: E402
from otm_fed.scenario import scenario_dataset, with_absolute_data  # noqa: E402
from otm_fed.transport import exact_ot_vertex, squared_distances, uniform  # noqa: E402

CO_ASSAYS = {"snare-seq": "SNARE-seq.npz", "scgem": "scGEM.npz"}
DATASETS = (*CO_ASSAYS, "synthetic", *DATASET_FILES)
METHODS = ("scot", "frames-local-only", "frames-otm", "rigid-ceiling")
RUN_OF = {"frames-local-only": "local-only", "frames-otm": "otm", "rigid-ceiling": "local-only"}
SCOT_SETTINGS = {"snare-seq": (110, 1e-3), "scgem": (35, 5e-3)}  # (k, epsilon) as published
SCOT_EPSILON = 1e-3
CO_ASSAY_ROUNDS = 100
SCORES = ("foscttm_plan", "foscttm_rigid", "label_transfer_plan", "label_transfer_rigid", "class_mass",
          "class_mass_chance")


# --------------------------------------------------------------------------- scores


def foscttm(projected: np.ndarray, target: np.ndarray) -> float:
    """SCOT's FOSCTTM: row i of both views is the same sample. For sample i, the share of the
    N - 1 other target rows strictly closer (Euclidean) to projected_i than target_i, and of the
    N - 1 other projected rows strictly closer to target_i than projected_i; their mean over both
    directions and all samples (0 perfect, about 0.5 at random)."""
    distances = cdist(projected, target)
    true = np.diag(distances)
    closer = (distances < true[:, None]).sum(1) + (distances < true[None, :]).sum(0)
    return float((closer / (2.0 * (len(true) - 1))).mean())


def label_transfer(query: np.ndarray, reference: np.ndarray, query_labels: np.ndarray,
                   reference_labels: np.ndarray) -> float:
    """SCOT's label transfer accuracy with one neighbour: the share of query rows whose nearest
    reference row (Euclidean; the first on a tie) has their label."""
    nearest = cdist(query, reference).argmin(1)
    return float((reference_labels[nearest] == query_labels).mean())


def class_mass(plan: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray) -> tuple[float, float]:
    """(sum_ij T_ij [l_i = l_j] / sum_ij T_ij, its chance sum_c p_a(c) p_b(c))."""
    same = labels_a[:, None] == labels_b[None, :]
    n_classes = int(max(labels_a.max(), labels_b.max())) + 1
    share_a = np.bincount(labels_a, minlength=n_classes) / len(labels_a)
    share_b = np.bincount(labels_b, minlength=n_classes) / len(labels_b)
    return float((plan * same).sum() / plan.sum()), float(share_a @ share_b)


def barycentric_projection(plan: np.ndarray, target: np.ndarray) -> np.ndarray:
    """x^_i = sum_j T_ij y_j / sum_j T_ij: each source row at the plan's mean of its targets."""
    return plan @ target / plan.sum(1)[:, None]


def plan_scores(plan: np.ndarray, source: np.ndarray, target: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """FOSCTTM, label transfer and class mass of the source projected onto the target through ``plan``."""
    projected = barycentric_projection(plan, target)
    mass, chance = class_mass(plan, labels, labels)
    return {"foscttm_plan": foscttm(projected, target),
            "label_transfer_plan": label_transfer(projected, target, labels, labels),
            "class_mass": mass, "class_mass_chance": chance}


# --------------------------------------------------------------------------- SCOT


def unit_rows(x: np.ndarray) -> np.ndarray:
    """SCOT's default normalisation: every row scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def knn_graph(x: np.ndarray, k: int, mode: str = "connectivity") -> csr_matrix:
    """SCOT's k-NN graph under the correlation distance 1 - corr(x_i, x_j): ``connectivity``
    links each row to its k nearest rows counting itself, every edge of length 1; ``distance``
    to its k nearest other rows, each edge as long as their distance. A constant row (scGEM's
    methylation view has one) has no correlation (NaN) with any row; NaN sorts last, as in
    SCOT's own k-NN search."""
    with np.errstate(invalid="ignore", divide="ignore"):
        distances = cdist(x, x, "correlation")
    if mode == "distance":
        np.fill_diagonal(distances, np.inf)
    elif mode != "connectivity":
        raise ValueError(f"mode must be connectivity or distance, got {mode!r}")
    n = len(x)
    nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
    lengths = np.ones(nearest.shape) if mode == "connectivity" else np.take_along_axis(distances, nearest, 1)
    return csr_matrix((lengths.ravel(), (np.repeat(np.arange(n), k), nearest.ravel())), shape=(n, n))


def geodesic_distances(graph: csr_matrix) -> np.ndarray:
    """SCOT's intra-view structure C: shortest-path lengths on the undirected graph (an edge in
    either direction joins two rows), unreachable pairs at the largest finite length, the whole
    divided by its maximum."""
    lengths = shortest_path(graph, method="D", directed=False)
    finite = lengths[np.isfinite(lengths)].max()
    lengths[lengths > finite] = finite
    return lengths / lengths.max() if lengths.max() > 0 else lengths


def scot_coupling(x: np.ndarray, y: np.ndarray, k: int, epsilon: float) -> tuple[np.ndarray, float, bool]:
    """(Gamma, GW distance, converged): the entropic GW coupling of the rows' geodesic structures
    (square loss, uniform marginals), on L2-normalised rows. Converged as SCOT checks it: no NaN,
    no empty row or column, total mass at least 0.95."""
    c_x, c_y = (geodesic_distances(knn_graph(unit_rows(view), k)) for view in (x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Sinkhorn's "did not converge" at small epsilon
        coupling, log = ot.gromov.entropic_gromov_wasserstein(c_x, c_y, uniform(len(x)), uniform(len(y)),
                                                              "square_loss", epsilon=epsilon, log=True)
    converged = bool(np.isfinite(coupling).all() and coupling.any(1).all() and coupling.any(0).all()
                     and coupling.sum() >= 0.95)
    return coupling, float(log["gw_dist"]), converged


def scot_pair(x: np.ndarray, y: np.ndarray, labels: np.ndarray, k: int, epsilon: float) -> dict[str, Any]:
    """SCOT's alignment of view x onto view y (rows co-registered), scored."""
    coupling, gw_distance, converged = scot_coupling(x, y, k, epsilon)
    scores = plan_scores(coupling, unit_rows(x), unit_rows(y), labels) if converged else {}
    return {**scores, "gw_distance": gw_distance, "converged": converged}


def scot_settings(dataset: str, n_samples: int) -> tuple[int, float]:
    """(k, epsilon): the published ones, else SCOT's defaults k = min(N / 5, 50), epsilon = 1e-3."""
    return SCOT_SETTINGS.get(dataset, (min(n_samples // 5, 50), SCOT_EPSILON))


# --------------------------------------------------------------------------- the frames


def frames_pairs(codes: Mapping[int, np.ndarray], labels: np.ndarray, gw_starts: int,
                 rng: np.random.Generator) -> list[dict[str, Any]]:
    """The server's label-free fit on all rows of every modality's codes (no earlier rotations,
    so every modality gets ``gw_starts`` GW starts), scored per modality m > 0 against the
    reference: through the exact OT plan between phi_m(Z_m) and phi_0(Z_0), which is the plan the
    fit's last Wasserstein-Procrustes step ends on, and by the rigid map alone."""
    alignment = align_frames(codes, {}, gw_starts, rng, search=True)
    target = alignment.frames[alignment.reference].to_common(codes[alignment.reference])
    pairs = []
    for m in sorted(codes):
        if m == alignment.reference:
            continue
        source = alignment.frames[m].to_common(codes[m])
        pairs.append({"modality": m, **exact_plan_scores(source, target, labels),
                      "foscttm_rigid": foscttm(source, target),
                      "label_transfer_rigid": label_transfer(source, target, labels, labels),
                      "objective": alignment.objectives[m], "confidence": alignment.confidences[m]})
    return pairs


def exact_plan_scores(source: np.ndarray, target: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``plan_scores`` through the exact OT plan for the cost ||source_i - target_j||^2."""
    n = len(source)
    rows, cols, values = exact_ot_vertex(squared_distances(source, target), uniform(n), uniform(len(target)))[0]
    plan = np.zeros((n, len(target)))
    plan[rows, cols] = values
    return plan_scores(plan, source, target, labels)


def ceiling_pairs(codes: Mapping[int, np.ndarray], labels: np.ndarray) -> list[dict[str, Any]]:
    """Orthogonal Procrustes of each standardised modality m > 0 onto modality 0 on the true pairs
    (argmin_Q ||x Q - y||_F, rows in correspondence), scored by its rigid map and by the exact OT
    plan at that Q."""
    reference = min(codes)
    centre, scale = standardise(codes[reference])
    target = (codes[reference] - centre) / scale
    pairs = []
    for m in sorted(codes):
        if m == reference:
            continue
        centre, scale = standardise(codes[m])
        source = (codes[m] - centre) / scale
        source = source @ anchor_rotation(source, target)
        pairs.append({"modality": m, **exact_plan_scores(source, target, labels),
                      "foscttm_rigid": foscttm(source, target),
                      "label_transfer_rigid": label_transfer(source, target, labels, labels)})
    return pairs


# --------------------------------------------------------------------------- data and runs


def raw_views(dataset: str, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The data set's views as given (float64, file order) and its labels (0..C-1)."""
    if dataset in CO_ASSAYS:
        data = load_multiview(resolve_data_dir() / CO_ASSAYS[dataset])
    elif dataset == "synthetic":
        data = scenario_dataset(resolve_config("synthetic", {"seed": str(seed)}))
    else:
        data = load_dataset(dataset)
    return [view.astype(np.float64) for view in data.views], data.labels


def run_config(dataset: str, strategy: str, seed: int) -> dict[str, Any]:
    """The scenario's settings (SNARE-seq and scGEM: the defaults, z-scored, 100 rounds), unaligned."""
    overrides = {"strategy": strategy, "seed": str(seed), "aligned": "false"}
    if dataset in CO_ASSAYS:
        overrides.update({"dataset": str(resolve_data_dir() / CO_ASSAYS[dataset]), "scenario": dataset,
                          "normalisation": "zscore", "rounds": str(CO_ASSAY_ROUNDS)})
        return with_absolute_data(resolve_config(None, overrides))
    return resolve_config(dataset, overrides)


def final_codes(dataset: str, strategy: str, seed: int, runs_dir: Path) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Every agent's final codes of a run (file order: ``eval-codes.npz``), and the run's record
    (folder, config, seconds, modalities that ever mixed); the run is made unless its folder
    already holds a finished one."""
    from launcher.inprocess import run_inprocess

    config = run_config(dataset, strategy, seed)
    run_dir = runs_dir / f"{dataset}-{strategy}-seed{seed}"
    if not (run_dir / EVAL_CODES_FILE).is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            run_inprocess(config, scenario_dataset(config).n_views, run_dir)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    with np.load(run_dir / EVAL_CODES_FILE) as arrays:
        codes = {int(name.removeprefix("codes-")): arrays[name].astype(np.float64)
                 for name in arrays.files if name.startswith("codes-")}
    record = {"run_dir": str(run_dir), "run_seconds": summary["wall_seconds"],
              "mixed": [entry["modality"] for entry in summary["mixing"] if entry["mixed"]]}
    return codes, {**record, "config": config}


# --------------------------------------------------------------------------- rows


def mean_row(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over modality pairs of every score present, and the pairs themselves."""
    row: dict[str, Any] = {name: float(np.mean([pair[name] for pair in pairs])) if pairs and name in pairs[0] else None
                           for name in SCORES}
    return {**row, "pairs": pairs}


def headline(row: dict[str, Any], rigid: bool) -> dict[str, Any]:
    """``foscttm`` and ``label_transfer``: the rigid map's (the ceiling) or the plan's."""
    kind = "rigid" if rigid else "plan"
    return {**row, "foscttm": row[f"foscttm_{kind}"], "label_transfer": row[f"label_transfer_{kind}"]}


def timed(measure: Callable[[], Any]) -> tuple[Any, float]:
    """(measure(), its wall-clock seconds)."""
    started = time.perf_counter()
    result = measure()
    return result, time.perf_counter() - started


def scot_row(dataset: str, seed: int) -> dict[str, Any]:
    """SCOT of view 0 onto each other view, scored; mean over the pairs."""
    views, labels = raw_views(dataset, seed)
    k, epsilon = scot_settings(dataset, len(labels))
    pairs, seconds = timed(lambda: [{"modality": m, **scot_pair(views[0], views[m], labels, k, epsilon)}
                                    for m in range(1, len(views))])
    converged = all(pair["converged"] for pair in pairs)
    row = mean_row(pairs if converged else [])
    return {**headline(row, rigid=False), "pairs": pairs, "k": k, "epsilon": epsilon, "converged": converged,
            "seconds": seconds}


def dataset_rows(dataset: str, seed: int, methods: list[str], runs_dir: Callable[[], Path],
                 scot_cache: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method on one data set and seed."""
    runs: dict[str, tuple[dict[int, np.ndarray], dict[str, Any]]] = {}
    labels = raw_views(dataset, seed)[1]
    rows = []
    for method in methods:
        if method == "scot":
            key = f"{dataset}-{seed}" if dataset == "synthetic" else dataset
            if key not in scot_cache:
                scot_cache[key] = scot_row(dataset, seed)
            row = scot_cache[key]
        else:
            strategy = RUN_OF[method]
            if strategy not in runs:
                runs[strategy] = final_codes(dataset, strategy, seed, runs_dir())
            codes, record = runs[strategy]
            if method == "rigid-ceiling":
                pairs, seconds = timed(lambda: ceiling_pairs(codes, labels))
                row = {**headline(mean_row(pairs), rigid=True), "seconds": seconds}
            else:
                config = record["config"]
                rng = np.random.default_rng([config["seed"], config["rounds"] + 1, 3])
                pairs, seconds = timed(lambda: frames_pairs(codes, labels, config["align-starts"], rng))
                row = {**headline(mean_row(pairs), rigid=False), "seconds": seconds,
                       "confidence": float(np.mean([pair["confidence"] for pair in pairs])),
                       "objective": float(np.mean([pair["objective"] for pair in pairs]))}
            row.update({name: value for name, value in record.items() if name != "config"})
        rows.append({"dataset": dataset, "seed": seed, "method": method, **row})
    return rows


def mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Per data set and method: mean ± std over seeds, and the headline FOSCTTM of every seed."""
    lines = ["| data set | method | seeds | FOSCTTM | per seed | FOSCTTM, rigid frame | label transfer | "
             "class mass (chance) | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    for (dataset, method), group in groups.items():
        per_seed = ", ".join("-" if r["foscttm"] is None else f"{r['foscttm']:.3f}" for r in group)
        masses = [r["class_mass"] for r in group if r["class_mass"] is not None]
        mass = f"{mean_std(masses)} ({group[0]['class_mass_chance']:.3f})" if masses else "-"
        cells = [dataset, method, str(len(group)), mean_std([r["foscttm"] for r in group]), per_seed,
                 mean_std([r["foscttm_rigid"] for r in group]), mean_std([r["label_transfer"] for r in group]),
                 mass, f"{np.mean([r['seconds'] for r in group]):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def comma_list(allowed: tuple[str, ...], what: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma list of names from ``allowed``, else one line naming the unknown."""
    def parse(text: str) -> list[str]:
        names = [name.strip().lower() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or repr(text)}; "
                                             f"known: {', '.join(allowed)}")
        return names
    return parse


def seed_list(text: str) -> list[int]:
    """An argparse type: a comma list of non-negative integers."""
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be a comma list of integers, got {text!r}") from None
    if any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=comma_list(DATASETS, "data set"), default=list(CO_ASSAYS),
                        help=f"a comma list of {', '.join(DATASETS)} (default snare-seq,scgem)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="a comma list of seeds (default 0,1,2)")
    parser.add_argument("--methods", type=comma_list(METHODS, "method"), default=list(METHODS),
                        help=f"a comma list of {', '.join(METHODS)} (default all)")
    parser.add_argument("--runs-dir", help="where the training runs go (default a new runs/unpaired-alignment-"
                        "YYYYmmdd-HHMMSS-MICROSECONDS); a finished run found there is read, not run again")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    made: list[Path] = []

    def runs_dir() -> Path:
        """``--runs-dir``, else a new folder, made on first use (SCOT alone trains nothing)."""
        if not made:
            made.append((Path(args.runs_dir) if args.runs_dir else new_folder("runs", "unpaired-alignment")).resolve())
        return made[0]

    rows: list[dict[str, Any]] = []
    scot_cache: dict[str, dict[str, Any]] = {}
    for dataset in args.datasets:
        for seed in args.seeds:
            rows += dataset_rows(dataset, seed, args.methods, runs_dir, scot_cache)
            for row in rows[-len(args.methods):]:
                shown = "-" if row["foscttm"] is None else f"{row['foscttm']:.4f}"
                print(f"{dataset} seed {seed} {row['method']}: FOSCTTM {shown} ({row['seconds']:.1f} s)", flush=True)
    print(markdown_table(rows))
    if made:
        print(f"runs: {made[0]}")
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
