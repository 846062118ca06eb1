"""The correspondence oracle and each view's headroom: what mixing could carry, and what a view allows.

Simulation and benchmarks only, never a product option: the oracle reads the true correspondence
of the agents' rows, which only a simulation knows.

``OracleStrategy`` is OTM with the correspondence given: every modality's batch holds the same
samples in the same order (``aligned = true``, refused otherwise), the frames phi_m are fitted by
orthogonal Procrustes on the true pairs (each modality's standardised batch onto the reference's),
the plans are the true coupling T_m = I / N, and the rest is OTM's, unchanged: the masks M_m and
Z~_B of eq. 3 (``otm_fed.mixer.sample_masks`` and ``mix``, drawn from the round's seed as OTM
draws them), eq. 4 and the agent's update. No gate: every modality mixes from round 1.

    python benchmarks/clustering.py --methods local-only,otm,otm-oracle ...   # the method ``otm-oracle``
    PYTHONPATH=benchmarks otm-fed simulate --set strategy=oracle:OracleStrategy --set aligned=true

``headroom``: per view, the ceiling its own features allow, against labels: a logistic-regression
probe and a small MLP probe, trained on the agents' training rows and scored on their evaluation
rows, beside raw k-means ACC of the view; with ``--runs`` (a ``benchmarks/clustering.py`` JSON)
each method's per-view ACC and its gain over local-only as a fraction of ceiling - local-only.

    python benchmarks/oracle.py headroom --datasets synthetic,orl,... --seeds 36,37 [--runs PATH] --json PATH

``views``: per data set, method and view, the paired difference to local-only on the same batches
(aligned for the oracle).

    python benchmarks/oracle.py views results/mixing-*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otm_fed.alignment import batch_sample_ids  # noqa: E402
from otm_fed.config import ConfigError, resolve_config  # noqa: E402
from otm_fed.frames import Frame, FrameAlignment, anchor_rotation, procrustes_misfit, standardise  # noqa: E402
from otm_fed.metrics import kmeans_scores  # noqa: E402
from otm_fed.mixer import (FGWBarycenter, MaskMode, MixResult, as_generator, barycentric_update, codes_dtype,  # noqa: E402
                           mix, sample_masks, validate_codes, validate_weights)
from otm_fed.results import write_json  # noqa: E402
from otm_fed.scenario import normalised_views, scenario_dataset  # noqa: E402
from otm_fed.supervised import fold_indices  # noqa: E402
from otm_fed.transport import fgw_objective, pairwise_distances, squared_distances, uniform  # noqa: E402
from server.strategy import OTMStrategy  # noqa: E402

DATASETS = ("synthetic", "orl", "movies", "prokaryotic", "handwritten")
MLP_HIDDEN = (64,)
PROBE_ITERATIONS = 1000
MIN_HEADROOM = 0.01  # below this, a gain's share of the headroom is noise: not reported


# --------------------------------------------------------------------------- the oracle


def true_coupling(n: int) -> np.ndarray:
    """T = I / N: row i of Z_B is sample i of every modality's batch (rows sum to mu_B, columns to mu_m)."""
    return np.eye(n) / n


def oracle_frames(codes: Mapping[int, np.ndarray]) -> FrameAlignment:
    """phi_m for every modality of ``codes`` (modality id -> Z_m, rows the same samples in every
    modality): c_m, s_m of its batch (``standardise``) and Q_m the orthogonal Procrustes fit of its
    standardised rows onto the reference's (the lowest id, Q = I) on the true pairs. Objectives
    are the mean squared residual of the pairs, confidences 1 - m^2 (``procrustes_misfit``: 1 for a
    similar copy of the reference's codes)."""
    reference = min(codes)
    frames: dict[int, Frame] = {}
    scaled: dict[int, np.ndarray] = {}
    for m in sorted(codes):
        centre, scale = standardise(codes[m])
        scaled[m] = (codes[m] - centre) / scale
        rotation = np.eye(codes[m].shape[1]) if m == reference else anchor_rotation(scaled[m], scaled[reference])
        frames[m] = Frame(centre, scale, rotation)
    objectives = {m: float(((scaled[m] @ frames[m].rotation - scaled[reference]) ** 2).sum(1).mean()) for m in frames}
    confidences = {m: 1.0 - procrustes_misfit(scaled[m], scaled[reference]) for m in frames}
    readings = {m: {"confidence": c} for m, c in confidences.items() if m != reference}
    return FrameAlignment(frames, objectives, confidences, reference, readings)


@dataclass(frozen=True)
class OracleMixer:
    """A ``Mixer`` for codes whose rows correspond: T_m = I / N, Z_B = sum_m lambda_m Z_m (the
    barycentric update at those plans), then eq. 3 with OTM's masks. The objective recorded is
    sum_m lambda_m FGW(Z_B, Z_m) at the true plans (eq. 2)."""

    alpha: float = 0.5
    weights: tuple[float, ...] | None = None
    mask_mode: MaskMode = "binary"
    wrong_share: float = 0.0  # of the rows of every modality but the first, paired with a wrong row
    order: tuple[int, ...] | None = None  # else every modality but the first pairs row i with row order[i]

    def __call__(self, codes: Sequence[np.ndarray], seed: int | np.random.Generator = 0) -> MixResult:
        z_ms = validate_codes(codes)
        n = z_ms[0].shape[0]
        if any(z.shape[0] != n for z in z_ms):
            raise ValueError(f"the oracle needs batches of the same samples, got sizes {[z.shape[0] for z in z_ms]}")
        lambdas = validate_weights(self.weights, len(z_ms))
        generator = as_generator(seed)
        if self.order is not None:
            plans = [true_coupling(n)] + [np.eye(n)[list(self.order)] / n for _ in z_ms[1:]]
        elif self.wrong_share:
            plans = [true_coupling(n)] + [partly_wrong_coupling(n, self.wrong_share, np.random.default_rng(
                [int(generator.integers(2**31)), m])) for m in range(1, len(z_ms))]
        else:
            plans = [true_coupling(n) for _ in z_ms]
        barycenter = barycentric_update(plans, z_ms, lambdas, uniform(n))
        structure = pairwise_distances(barycenter)
        objective = float(sum(lam * fgw_objective(squared_distances(barycenter, z), structure, pairwise_distances(z),
                                                  plan, self.alpha)
                              for lam, z, plan in zip(lambdas, z_ms, plans)))
        masks = sample_masks(len(z_ms), barycenter.shape, self.weights, self.mask_mode, generator)
        mixed = mix(z_ms, plans, masks)
        return MixResult(mixed.astype(codes_dtype(codes)), plans, masks,
                         FGWBarycenter(barycenter, plans, objective, objective, [objective]))


def partly_wrong_coupling(n: int, wrong_share: float, rng: np.random.Generator) -> np.ndarray:
    """P / N for a permutation P that keeps all but round(wrong_share N) rows in place and pairs
    those with one another in a random cycle, so that exactly that share of rows is paired wrong."""
    wrong = rng.choice(n, int(round(wrong_share * n)), replace=False)
    order = np.arange(n)
    if len(wrong) > 1:
        order[wrong] = np.roll(wrong, 1)
    return np.eye(n)[order] / n


class OracleStrategy(OTMStrategy):
    """OTM given the true correspondence (simulation only): Procrustes frames on the true pairs,
    T_m = I / N, OTM's masks and eq. 3-4, every modality mixing from round 1."""

    name = "otm-oracle"
    wrong_share = 0.0

    def __init__(self, config: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        if not config["aligned"]:
            raise ConfigError("the correspondence oracle needs aligned = true (the same samples, in the same "
                              "order, in every modality's batch)")
        if config["barycenter-size"] and config["barycenter-size"] != config["batch-size"]:
            raise ConfigError(f"the correspondence oracle's Z_B has the batch's rows: barycenter-size must be 0 "
                              f"(or the batch size), got {config['barycenter-size']}")
        super().__init__(config, *args, mixer=OracleMixer(config["alpha"], mask_mode=config["mask"],
                                                          wrong_share=self.wrong_share), **kwargs)

    def align(self, server_round: int, codes: Mapping[int, np.ndarray]) -> FrameAlignment:
        """phi_m fitted on the true pairs (``oracle_frames``); where the server knows the samples
        (simulation with ``fused-eval``), the batches are first checked to hold the same ones."""
        if self.samples is not None:
            ids = batch_sample_ids(self.config, self.samples, sorted(codes), server_round,
                                   self.round_seed(server_round))
            if any(not np.array_equal(ids[0], other) for other in ids[1:]):
                raise RuntimeError(f"round {server_round}: the modalities' batches do not hold the same samples")
        return oracle_frames({m: codes[m].astype(np.float64) for m in codes})

    def gated_modalities(self, alignment: FrameAlignment | None, modalities: Sequence[int]) -> list[int]:
        """Every modality that sent codes (no gate); fewer than two leave no one to mix with."""
        modalities = sorted(modalities)
        return modalities if len(modalities) >= 2 else []


class PartialOracleStrategy(OracleStrategy):
    """The oracle with plans right on 70% of the pairs (``partly_wrong_coupling``): targets about
    as class-correct as the plans that dragged strong views in measured runs (0.67-0.77)."""

    name = "otm-oracle-70"
    wrong_share = 0.3


def class_swap_order(labels: np.ndarray, swapped: Sequence[int]) -> np.ndarray:
    """A permutation of the batch's rows pairing the rows of each class in ``swapped`` with rows of
    the next class in that cycle (as many as it has; the rest among the swapped classes' rows),
    every other row with itself: whole clusters matched to the wrong cluster."""
    order = np.arange(len(labels))
    if len(swapped) < 2:
        return order
    sources = np.concatenate([np.flatnonzero(labels == c) for c in swapped])
    targets = np.concatenate([np.flatnonzero(labels == c) for c in np.roll(swapped, -1)])
    order[sources] = targets
    return order


class ClassSwapOracleStrategy(OracleStrategy):
    """The oracle with a third of the classes (at least two) matched, whole, to the wrong class, in
    a cycle fixed for the run (seeded by ``seed``): plans about 70% class-correct whose errors are
    coherent, the error that dragged strong views on public sets. It reads the samples' classes,
    so it needs the simulation's labels (``fused-eval``)."""

    name = "otm-oracle-swap"
    swapped_share = 1 / 3

    def align(self, server_round: int, codes: Mapping[int, np.ndarray]) -> FrameAlignment:
        """The oracle's frames; the plans of this round's batch pair the swapped classes wrongly."""
        alignment = super().align(server_round, codes)
        if self.samples is None:
            raise RuntimeError("the class-swap oracle needs the samples' classes (simulation with fused-eval = true)")
        classes = np.unique(self.samples.labels)
        swapped = np.random.default_rng(self.config["seed"]).choice(
            classes, max(2, int(round(self.swapped_share * len(classes)))), replace=False)
        ids = batch_sample_ids(self.config, self.samples, sorted(codes), server_round,
                               self.round_seed(server_round))[0]
        self.mixer = replace(self.mixer, order=tuple(int(i) for i in class_swap_order(self.samples.labels[ids], swapped)))
        return alignment


# --------------------------------------------------------------------------- headroom


def probe_scores(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                 seed: int = 0) -> dict[str, float]:
    """Accuracy on the evaluation rows of a logistic-regression probe (``linear``) and of a small
    MLP probe (``mlp``: one hidden layer, seeded, early stopping), both fitted on the training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    linear = LogisticRegression(max_iter=PROBE_ITERATIONS).fit(x_train, y_train)
    mlp = MLPClassifier(MLP_HIDDEN, early_stopping=True, max_iter=PROBE_ITERATIONS,
                        random_state=seed).fit(x_train, y_train)
    return {"linear": float(linear.score(x_eval, y_eval)), "mlp": float(mlp.score(x_eval, y_eval))}


def view_headroom(dataset: str, seed: int, data_dir: str = "") -> list[dict[str, Any]]:
    """Per view of a scenario at ``seed``: raw k-means ACC on every row (what the clustering
    benchmark's raw-kmeans reads) and the probes' accuracy (``probe_scores``) on the agents'
    split (``fold_indices``: an agent's training rows are the fold's training rows, its evaluation
    rows the test fold, as in supervised mode; a clustering agent trains and is scored on every
    row, where a probe would measure its fit rather than what the features carry)."""
    config = resolve_config(dataset, {"seed": str(seed), "data-dir": data_dir})
    data = scenario_dataset(config)
    train, test = fold_indices(data.labels, config["n-folds"], config["fold"], seed)
    rows = []
    for view, x in enumerate(normalised_views(config, data)):
        raw = kmeans_scores(x, data.labels, data.n_classes, config["kmeans-init"], seed)["acc"]
        probes = probe_scores(x[train], data.labels[train], x[test], data.labels[test], seed)
        rows.append({"dataset": Path(dataset).stem if dataset.endswith(".toml") else dataset, "seed": seed,
                     "view": view, "raw_kmeans_acc": raw, **probes, "ceiling": max(probes.values())})
    return rows


def per_view_acc(runs: Sequence[Mapping[str, Any]], dataset: str) -> dict[str, np.ndarray]:
    """Method -> mean over seeds of its per-view ACC on ``dataset``, unaligned rows of a clustering JSON."""
    by_method: dict[str, list[list[float]]] = {}
    for row in runs:
        if row["dataset"] == dataset and not row["aligned"] and "acc_per_modality" in row:
            by_method.setdefault(row["method"], []).append(row["acc_per_modality"])
    return {method: np.mean(values, axis=0) for method, values in by_method.items()}


def headroom(datasets: Sequence[str], seeds: Sequence[int], runs: Sequence[Mapping[str, Any]] = (),
             data_dir: str = "") -> list[dict[str, Any]]:
    """Per data set and view, means over ``seeds``: raw k-means ACC, the linear and MLP probes and
    the ceiling (the better probe); with ``runs``, every method's ACC and, beside local-only's,
    its gain as a fraction of the headroom ceiling - local-only (where that exceeds MIN_HEADROOM)."""
    out = []
    for dataset in datasets:
        rows = [row for seed in seeds for row in view_headroom(dataset, seed, data_dir)]
        accs = per_view_acc(runs, rows[0]["dataset"])
        local = accs.get("local-only")
        for view in sorted({row["view"] for row in rows}):
            own = [row for row in rows if row["view"] == view]
            entry: dict[str, Any] = {"dataset": own[0]["dataset"], "view": view, "seeds": list(seeds),
                                     **{name: float(np.mean([row[name] for row in own]))
                                        for name in ("raw_kmeans_acc", "linear", "mlp", "ceiling")}}
            entry["acc"] = {method: float(values[view]) for method, values in accs.items()}
            if local is not None:
                room = entry["ceiling"] - float(local[view])
                entry["headroom"] = room
                entry["fraction_of_headroom"] = {method: (float(values[view]) - float(local[view])) / room
                                                 for method, values in accs.items()
                                                 if method != "local-only" and room > MIN_HEADROOM}
            out.append(entry)
    return out


def headroom_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per data set and view, raw k-means, the probes, then each method's ACC and, after
    local-only, the share of the headroom it gained."""
    methods = sorted({method for entry in entries for method in entry["acc"]},
                     key=lambda method: (method != "local-only", method))
    lines = ["| data set | view | raw k-means ACC | linear probe | MLP probe | " +
             "".join(f"{method} ACC | " for method in methods) + "headroom |",
             "|---|---|---|---|---|" + "---|" * (len(methods) + 1)]
    for entry in entries:
        cells = [entry["dataset"], str(entry["view"]), *(f"{entry[name]:.3f}" for name in ("raw_kmeans_acc", "linear", "mlp"))]
        for method in methods:
            acc = entry["acc"].get(method)
            fraction = entry.get("fraction_of_headroom", {}).get(method)
            cells.append("-" if acc is None else f"{acc:.3f}" + ("" if fraction is None else f" ({fraction:+.0%})"))
        cells.append(f"{entry['headroom']:+.3f}" if "headroom" in entry else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def view_table(rows: Sequence[Mapping[str, Any]], baseline: str = "local-only") -> str:
    """Per data set, method and view: mean ACC and the paired per-seed difference to ``baseline``
    on the same batches, with its standard error and verdict (clearly above / below: more than two
    standard errors from 0). The oracle's batches are aligned whatever the setting, so an
    ``otm-oracle*`` method pairs with ``baseline`` run on aligned batches; any other method with
    ``baseline`` in its own setting. A row run with ``--set`` overrides is its own method, named
    with them, and pairs with ``baseline`` run with the same overrides where there is one, else
    with plain ``baseline``. Rows: ``benchmarks/clustering.py`` JSON rows of any setting."""
    def batches_aligned(row: Mapping[str, Any]) -> bool:
        return bool(row["aligned"]) or row["method"].startswith("otm-oracle")

    def overrides(row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(f"{key}={value}" for key, value in sorted(row.get("set", {}).items()))

    def label(row: Mapping[str, Any]) -> str:
        """The method, with the run's ``--set`` overrides where it had any."""
        return " ".join([row["method"], *overrides(row)])

    base = {(r["dataset"], r["seed"], bool(r["aligned"]), overrides(r)): np.array(r["acc_per_modality"])
            for r in rows if r["method"] == baseline}

    def alone(row: Mapping[str, Any]) -> np.ndarray | None:
        """The baseline of ``row``'s seed and batches: run with its overrides, else without."""
        key = (row["dataset"], row["seed"], batches_aligned(row))
        return base.get((*key, overrides(row)), base.get((*key, ())))

    lines = ["| data set | method | seeds | ACC per view | minus local-only on the same batches, per view | mean |",
             "|---|---|---|---|---|---|"]
    methods = sorted({(r["dataset"], label(r)) for r in rows if r["method"] != baseline})
    for dataset, method in methods:
        paired = [(np.array(r["acc_per_modality"]), alone(r)) for r in rows
                  if (r["dataset"], label(r)) == (dataset, method) and alone(r) is not None]
        if len(paired) < 2:
            continue
        acc = np.mean([own for own, _ in paired], axis=0)
        diffs = np.array([own - alone for own, alone in paired])
        mean, error = diffs.mean(0), diffs.std(0, ddof=1) / np.sqrt(len(diffs))

        def verdict(m: float, e: float) -> str:
            return "above" if m > 2 * e and m > 0 else "below" if m < -2 * e and m < 0 else "tie"

        views = ", ".join(f"{m:+.3f} ± {e:.3f} {verdict(m, e)}" for m, e in zip(mean, error))
        total = diffs.mean(1)
        total_error = total.std(ddof=1) / np.sqrt(len(total))
        lines.append(f"| {dataset} | {method} | {len(diffs)} | {' '.join(f'{a:.3f}' for a in acc)} | {views} | "
                     f"{total.mean():+.4f} ± {total_error:.4f} {verdict(total.mean(), total_error)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    room = commands.add_parser("headroom", help="each view's ceiling (linear and MLP probes) beside raw k-means")
    room.add_argument("--datasets", default=",".join(DATASETS), help="names or scenario files PATH.toml")
    room.add_argument("--seeds", default="0", help="comma list; the probes and the synthetic draw follow the seed")
    room.add_argument("--runs", type=lambda text: [Path(part) for part in text.split(",")], default=[],
                      metavar="JSON[,JSON...]", help="benchmarks/clustering.py JSON files: per-view ACC of their methods")
    room.add_argument("--data-dir", default="")
    room.add_argument("--json", help="write the entries here")
    views = commands.add_parser("views", help="per-view paired differences to local-only on the same batches")
    views.add_argument("files", nargs="+", type=Path, help="benchmarks/clustering.py JSON files, read together")
    args = parser.parse_args(argv)
    if args.command == "views":
        missing = [str(path) for path in args.files if not path.is_file()]
        if missing:
            parser.error(f"no such file: {', '.join(missing)}")
        print(view_table([row for path in args.files for row in json.loads(path.read_text())]))
        return 0
    missing = [str(path) for path in args.runs if not path.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds takes a comma list of integers, got {args.seeds!r}")
    runs = [row for path in args.runs for row in json.loads(path.read_text())]
    entries = headroom(args.datasets.split(","), seeds, runs, args.data_dir)
    print(headroom_table(entries))
    if args.json:
        write_json(args.json, entries)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
