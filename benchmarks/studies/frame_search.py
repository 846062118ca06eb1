"""Which label-free search finds the frame whose Wasserstein-Procrustes objective is lowest?

The server's fit minimises W(Q) = min_T <T, D(X_m Q, X_r)> from starts read off Gromov-Wasserstein
plans (``otm_fed.frames``). On SNARE-seq codes a refinement from the true-pair rotation reaches a
lower W than the label-free fit, so the objective is right and the search misses its basin. This
study re-fits the alignment with variants of the search on the final codes of local-only runs
(``eval-codes.npz``: rows co-registered with the data file, labels included) and scores each by
FOSCTTM (SCOT's definition) through the exact OT plan at the fitted map and by the rigid map
alone, the plan's class mass, W and seconds. Variants (every one refines its survivors on the
full batch from I as well, as ``fit_rotation`` does):

* ``today``: ``frames.fit_rotation`` as it is: 10 GW starts on one draw of 128 rows, Euclidean
  structures, each refined there (up to 30 steps), the lowest W on that draw kept.
* ``geodesic``: as ``today`` with k-NN geodesic structures (``geodesic_distances``).
* ``entropic``: as ``geodesic``, each GW start first annealed through entropic GW (epsilon 0.05,
  0.01, 0.002 of the squared largest structure entry), then refined exactly.
* ``full-ranking``: as ``today``, but every distinct map refined and ranked on the full batch.
* ``draws-geodesic``: the starts spread over draws (2 per draw of 128 rows, 5 steps there), the
  distinct maps ranked by W at the map on 256 rows, the best 4 refined on the full batch.
* ``draws-geodesic-tree``: as ``draws-geodesic``, the k-NN graph joined with its Euclidean minimum
  spanning tree (connected, so well-separated clusters keep their distances).
* ``draws-euclidean``: as ``draws-geodesic`` with Euclidean structures.
* ``draws-geodesic-tuned``: as ``draws-geodesic`` with k chosen as SCOT chooses its own, label-free:
  of k = sqrt(N) times 0.5, 1 and 2, the one whose geodesic structures give the lowest GW
  objective (from the product coupling) on a first draw of SEARCH_ROWS rows.
* ``today-and-draws``: ``today``'s winner and ``draws-geodesic``'s survivors together.

With ``--restarts R`` each variant is fitted R times with independent generators, so a search
that lands in different frames (a bimodal fit) shows. ``--timing`` times ``today`` against
``--timed`` (default ``draws-geodesic``) on 256-row batches drawn from the codes, side by side
(the fit alone, without the confidence), and reports the ratio of their medians.

    python benchmarks/studies/frame_search.py RUN/eval-codes.npz [...] [--variants a,b] [--restarts R]
        [--timing N_BATCHES] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ot
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import minimum_spanning_tree, shortest_path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from otm_fed import frames  # noqa: E402
from otm_fed.results import write_json  # noqa: E402
from otm_fed.transport import exact_ot_vertex, pairwise_distances, solve_fgw_plan, uniform  # noqa: E402
from unpaired_alignment import exact_plan_scores, foscttm  # noqa: E402

ANNEALING = (0.05, 0.01, 0.002)
TIMING_ROWS = 256

Structure = Callable[[np.ndarray], np.ndarray]


SEARCH_ROWS = 128  # rows per draw (as SEARCH_ROWS)
EVALUATION_ROWS = 256  # rows on which the draws' maps are ranked
DRAW_STEPS = 5  # Wasserstein-Procrustes steps per start on its draw
KEPT_CANDIDATES = 4  # ranked maps refined on the full batch


K_FACTORS = (0.5, 1.0, 2.0)  # the k tried by the self-tuned variant, times sqrt(N)


def geodesic_distances(x: np.ndarray, tree: bool = False, k_factor: float = 1.0) -> np.ndarray:
    """Shortest-path lengths on the undirected k-NN graph of x (k = ceil(k_factor sqrt(N)) nearest
    other rows, each edge as long as its Euclidean distance), with ``tree`` joined with the
    Euclidean minimum spanning tree; pairs in different components at the largest finite length;
    divided by the mean (frame-free and scale-free)."""
    n = len(x)
    distances = pairwise_distances(x)
    k = max(1, min(n - 1, int(np.ceil(k_factor * np.sqrt(n)))))
    nearest = np.argpartition(distances + np.diag(np.full(n, np.inf)), k - 1, axis=1)[:, :k]
    graph = csr_matrix((np.take_along_axis(distances, nearest, 1).ravel(), (np.repeat(np.arange(n), k), nearest.ravel())),
                       shape=(n, n))
    if tree:
        graph = graph.maximum(minimum_spanning_tree(distances))
    lengths = shortest_path(graph, method="D", directed=False)
    lengths[~np.isfinite(lengths)] = lengths[np.isfinite(lengths)].max()
    return lengths / lengths.mean()


def geodesic_tree(x: np.ndarray) -> np.ndarray:
    """``geodesic_distances`` with the minimum spanning tree."""
    return geodesic_distances(x, tree=True)


def tuned_geodesic(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Structure:
    """SCOT's self-tuning of k, label-free: the geodesic structure (k = sqrt(N) times a K_FACTORS
    entry) whose GW objective between a draw of x's and of y's rows, solved from the product
    coupling, is lowest."""
    x_rows, y_rows = random_rows(x, SEARCH_ROWS, rng), random_rows(y, SEARCH_ROWS, rng)
    mu_x, mu_y = uniform(len(x_rows)), uniform(len(y_rows))

    def objective(factor: float) -> float:
        structure_x, structure_y = geodesic_distances(x_rows, k_factor=factor), geodesic_distances(y_rows, k_factor=factor)
        return float(ot.gromov.gromov_wasserstein2(structure_x, structure_y, mu_x, mu_y, "square_loss"))

    best = min(K_FACTORS, key=objective)
    return lambda z: geodesic_distances(z, k_factor=best)


def random_rows(z: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most n of z's rows, drawn without replacement."""
    return z if len(z) <= n else z[np.sort(rng.choice(len(z), n, replace=False))]


def distinct_rotations(rotations: list[np.ndarray], tol: float = 1e-3) -> list[np.ndarray]:
    """``rotations`` without those within ``tol`` (largest entry) of an earlier one."""
    kept: list[np.ndarray] = []
    for rotation in rotations:
        if all(np.abs(rotation - other).max() > tol for other in kept):
            kept.append(rotation)
    return kept


def entropic_start(structure_x: np.ndarray, structure_y: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Entropic GW (square loss) from ``initial``, epsilon annealed through ANNEALING times the
    squared largest structure entry; the product coupling where Sinkhorn loses mass."""
    mu_x, mu_y = uniform(len(structure_x)), uniform(len(structure_y))
    scale = max(structure_x.max(), structure_y.max()) ** 2
    plan = initial
    for epsilon in ANNEALING:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = ot.gromov.entropic_gromov_wasserstein(structure_x, structure_y, mu_x, mu_y, "square_loss",
                                                         epsilon=epsilon * scale, G0=plan, max_iter=50, tol=1e-7)
        if not np.isfinite(plan).all() or plan.sum() < 0.9:
            plan = np.outer(mu_x, mu_y)
    return plan


def start_plans(x: np.ndarray, y: np.ndarray, n_starts: int, rng: np.random.Generator, structure: Structure,
                entropic: bool) -> list[np.ndarray]:
    """``frames.gw_start_plans`` with a chosen structure, optionally annealed entropically first."""
    structure_x, structure_y = structure(x), structure(y)
    mu_x, mu_y = uniform(len(x)), uniform(len(y))
    plans = []
    for start in range(n_starts):
        initial = np.outer(mu_x, mu_y)
        if start:
            rows, cols, values = exact_ot_vertex(rng.random((len(x), len(y))), mu_x, mu_y)[0]
            initial = np.zeros((len(x), len(y)))
            initial[rows, cols] = values
        if entropic:
            initial = entropic_start(structure_x, structure_y, initial)
        plans.append(solve_fgw_plan(np.zeros((len(x), len(y))), structure_x, structure_y, 0.0, mu_x, mu_y,
                                    initial, frames.GW_STEPS)[0])
    return plans


def variant_starts(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, structure: Structure, per_draw: int,
                   draw_steps: int, ranking: str, entropic: bool = False, starts: int = 10) -> list[np.ndarray]:
    """The maps a search variant hands to the full batch: ``starts`` GW starts, ``per_draw`` on each
    draw of SEARCH_ROWS rows, each refined ``draw_steps`` steps on its draw; ranked by W on the
    draw (``draw``: the lowest one), on EVALUATION_ROWS rows (``evaluation``: the best
    KEPT_CANDIDATES) or not at all (``full``: every distinct map)."""
    fits = []
    for _ in range(-(-starts // per_draw)):
        x_rows, y_rows = random_rows(x, SEARCH_ROWS, rng), random_rows(y, SEARCH_ROWS, rng)
        for plan in start_plans(x_rows, y_rows, per_draw, rng, structure, entropic):
            rows, cols = np.nonzero(plan)
            start = frames.procrustes_rotation(x_rows, y_rows, (rows, cols, plan[rows, cols]))
            fits.append(frames.wasserstein_procrustes(x_rows, y_rows, start, draw_steps))
    fits.sort(key=lambda fit: fit[1])
    if ranking == "draw":
        return [fits[0][0]]
    rotations = distinct_rotations([rotation for rotation, _ in fits])
    if ranking == "full":
        return rotations
    x_rows, y_rows = random_rows(x, EVALUATION_ROWS, rng), random_rows(y, EVALUATION_ROWS, rng)
    ranked = sorted((frames.wasserstein_procrustes(x_rows, y_rows, q, 1) for q in rotations),
                    key=lambda fit: fit[1])
    return [rotation for rotation, _ in ranked[:KEPT_CANDIDATES]]


DRAWS = {"per_draw": 2, "draw_steps": DRAW_STEPS, "ranking": "evaluation"}
VARIANTS: dict[str, dict[str, Any]] = {
    "geodesic": {"structure": geodesic_distances, "per_draw": 10, "draw_steps": frames.PROCRUSTES_STEPS,
                 "ranking": "draw"},
    "entropic": {"structure": geodesic_distances, "per_draw": 10, "draw_steps": frames.PROCRUSTES_STEPS,
                 "ranking": "draw", "entropic": True},
    "full-ranking": {"structure": pairwise_distances, "per_draw": 10, "draw_steps": frames.PROCRUSTES_STEPS,
                     "ranking": "full"},
    "draws-geodesic": {"structure": geodesic_distances, **DRAWS},
    "draws-geodesic-tree": {"structure": geodesic_tree, **DRAWS},
    "draws-euclidean": {"structure": pairwise_distances, **DRAWS},
}


def scaled(z: np.ndarray) -> np.ndarray:
    """(z - c) / s as ``align_frames`` standardises a batch."""
    centre, scale = frames.standardise(z)
    return (z - centre) / scale


def fit(codes: dict[int, np.ndarray], variant: str, rng: np.random.Generator) -> dict[int, tuple[np.ndarray, float]]:
    """Per modality m > 0: (Q_m, W) into modality 0's frame, from I and the variant's searched maps."""
    y = scaled(codes[min(codes)])
    fitted = {}
    for m in sorted(codes)[1:]:
        x = scaled(codes[m])
        if variant == "today":
            fitted[m] = frames.fit_rotation(x, y, None, 10, rng)
            continue
        if variant == "draws-geodesic-tuned":
            searched = variant_starts(x, y, rng, **{**DRAWS, "structure": tuned_geodesic(x, y, rng)})
        elif variant == "today-and-draws":
            searched = [frames.searched_rotation(x, y, 10, rng), *variant_starts(x, y, rng, **VARIANTS["draws-geodesic"])]
        else:
            searched = variant_starts(x, y, rng, **VARIANTS[variant])
        fitted[m] = min((frames.wasserstein_procrustes(x, y, start) for start in [np.eye(x.shape[1]), *searched]),
                        key=lambda f: f[1])
    return fitted


def scored(codes: dict[int, np.ndarray], labels: np.ndarray, fitted: dict[int, tuple[np.ndarray, float]]) -> dict[str, float]:
    """Mean over modalities m > 0 of FOSCTTM through the plan and by the rigid map, class mass and W."""
    target = scaled(codes[min(codes)])
    pairs = []
    for m, (rotation, value) in fitted.items():
        source = scaled(codes[m]) @ rotation
        plan = exact_plan_scores(source, target, labels)
        pairs.append({"foscttm_plan": plan["foscttm_plan"], "foscttm_rigid": foscttm(source, target),
                      "class_mass": plan["class_mass"], "objective": value})
    return {name: float(np.mean([pair[name] for pair in pairs])) for name in pairs[0]}


def read_codes(path: Path) -> tuple[dict[int, np.ndarray], np.ndarray]:
    with np.load(path) as arrays:
        codes = {int(name.removeprefix("codes-")): arrays[name].astype(np.float64)
                 for name in arrays.files if name.startswith("codes-")}
        return codes, arrays["labels"]


def timing(paths: list[Path], batches: int, timed: str) -> dict[str, Any]:
    """Seconds of the fit with ``today``'s search and with ``timed``'s on the same 256-row batches
    (one per file in turn); the medians and their ratio."""
    seconds: dict[str, list[float]] = {"today": [], timed: []}
    rng = np.random.default_rng(0)
    for i in range(batches):
        codes, _ = read_codes(paths[i % len(paths)])
        batch = {m: z[rng.choice(len(z), min(len(z), TIMING_ROWS), replace=False)] for m, z in codes.items()}
        for variant in seconds:
            started = time.perf_counter()
            fit(batch, variant, np.random.default_rng(i))
            seconds[variant].append(time.perf_counter() - started)
    today, other = (float(np.median(seconds[v])) for v in ("today", timed))
    return {"timed": timed, "today_median_s": today, "timed_median_s": other, "ratio": other / today, "batches": batches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("codes", nargs="+", type=Path, help="eval-codes.npz files of local-only runs")
    names = ["today", *VARIANTS, "draws-geodesic-tuned", "today-and-draws"]
    parser.add_argument("--variants", default="today,draws-geodesic", help=f"a comma list of {', '.join(names)}")
    parser.add_argument("--timed", default="draws-geodesic", help="the variant timed against today")
    parser.add_argument("--restarts", type=int, default=1, help="independent fits per variant and file")
    parser.add_argument("--timing", type=int, default=0, help="256-row batches timed for today against --timed")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.codes if not path.is_file()]
    unknown = [name for name in args.variants.split(",") if name not in names]
    if missing or unknown:
        parser.error(f"no such file: {', '.join(missing)}" if missing else f"unknown variant: {', '.join(unknown)}")
    rows: list[dict[str, Any]] = []
    for path in args.codes:
        codes, labels = read_codes(path)
        for variant in args.variants.split(","):
            for restart in range(args.restarts):
                started = time.perf_counter()
                fitted = fit(codes, variant, np.random.default_rng([restart, 101, 3]))
                row = {"codes": str(path), "run": path.parent.name, "variant": variant, "restart": restart,
                       "seconds": time.perf_counter() - started, **scored(codes, labels, fitted)}
                rows.append(row)
                print(f"{row['run']} {variant} restart {restart}: FOSCTTM plan {row['foscttm_plan']:.3f} rigid "
                      f"{row['foscttm_rigid']:.3f} class mass {row['class_mass']:.3f} W {row['objective']:.4f} "
                      f"({row['seconds']:.1f} s)", flush=True)
    result: dict[str, Any] = {"rows": rows}
    if args.timing:
        result["timing"] = timing(args.codes, args.timing, args.timed)
        print(f"N = {TIMING_ROWS}: today {result['timing']['today_median_s']:.3f} s, {args.timed} "
              f"{result['timing']['timed_median_s']:.3f} s, ratio {result['timing']['ratio']:.2f}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
