"""The geometry bound, taken jointly: does asking the class matchings of three modalities to be
consistent with one another make the true matching the cheapest one?

    python benchmarks/studies/joint_matching.py [RUN/eval-codes.npz ...] [--raw synthetic,prokaryotic --seeds 0,1]
        [--json PATH]

For each file of codes (``eval-codes.npz``, as a run writes it: ``codes-0..M-1`` and the labels),
or each data set's normalised views (``--raw``), each modality's codes are centred and scaled (as
the server's frames do) and its C class centroids taken from the true labels: labels are read only
to measure what the codes' geometry allows. A class matching s between modalities a and b costs
its Gromov-Wasserstein cost on the centroids' distance matrices,

    GW_ab(s) = sum_ij (D_a[i, j] - D_b[s(i), s(j)])^2,

and the true matching is the identity. Pairwise, the rank of the identity among all C! matchings
is how far a label-free pairwise fit is from finding it (1: the cheapest). Jointly (M = 3), a
pair (s_1, s_2) of matchings of modalities 1 and 2 to modality 0 fixes the third,
s_12 = s_2 o s_1^-1, and costs GW_01(s_1) + GW_02(s_2) + GW_12(s_12): the rank of (id, id) among
all (C!)^2 consistent pairs is what a fit that enforces cycle consistency could reach. Brute
force, so only for C <= 8, and jointly for M = 3 and C <= 6 (the joint table has (C!)^2 entries). Prints a table, writes
one row per file. Findings: docs/findings/alignment-and-gate.md, "Cycle-consistent matchings".
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.config import ConfigError  # noqa: E402
from otm_fed.frames import standardise  # noqa: E402
from otm_fed.results import write_json  # noqa: E402
from otm_fed.scenario import normalised_views, seeded_draws  # noqa: E402
from local_training import seed_list  # noqa: E402

MAX_JOINT_CLASSES = 6
MAX_CLASSES = 8  # C! pairwise matchings, each a C x C table: 40320 at C = 8


def centroid_distances(codes: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The C x C Euclidean distances between class centroids of the centred, scaled codes."""
    centre, scale = standardise(codes)
    scaled = (codes - centre) / scale
    centroids = np.stack([scaled[labels == k].mean(0) for k in classes])
    return np.sqrt(((centroids[:, None] - centroids[None]) ** 2).sum(-1))


def gw_costs(d_a: np.ndarray, d_b: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """GW_ab(s) for every permutation s (a row of ``permutations``: class i of a -> s[i] of b)."""
    permuted = d_b[permutations[:, :, None], permutations[:, None, :]]
    return ((d_a[None] - permuted) ** 2).sum((1, 2))


def joint_costs(d: list[np.ndarray], permutations: np.ndarray) -> np.ndarray:
    """(C!) x (C!) table: entry (s_1, s_2) = GW_01(s_1) + GW_02(s_2) + GW_12(s_2 o s_1^-1), for
    the centroid distances ``d`` of three modalities."""
    n_classes = permutations.shape[1]
    weights = n_classes ** np.arange(n_classes)[::-1]
    position = np.full(n_classes ** n_classes, -1)
    position[permutations @ weights] = np.arange(len(permutations))
    inverse = np.argsort(permutations, axis=1)
    # s_12[j] = s_2[s_1^-1[j]]: class j of modality 1 back to modality 0, then on to modality 2
    composed = np.stack([permutations[:, inverse[i]] for i in range(len(permutations))])
    third = gw_costs(d[1], d[2], permutations)[position[composed @ weights]]
    return gw_costs(d[0], d[1], permutations)[:, None] + gw_costs(d[0], d[2], permutations)[None, :] + third


def rank_of(costs: np.ndarray, truth: tuple[int, ...] | int) -> int:
    """1 + the number of entries strictly cheaper than the true one."""
    return int((costs < costs[truth]).sum()) + 1


def matching_row(name: str, views: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Pairwise and (M = 3, C <= MAX_JOINT_CLASSES) joint rank of the true matching between the
    modalities' ``views`` (codes or raw features, rows in correspondence with ``labels``)."""
    classes = np.unique(labels)
    if len(classes) > MAX_CLASSES:
        raise ValueError(f"{name}: {len(classes)} classes, more than the {MAX_CLASSES} whose C! matchings are enumerated")
    distances = [centroid_distances(view.astype(np.float64), labels, classes) for view in views]
    permutations = np.array(list(itertools.permutations(range(len(classes)))))
    identity = 0  # itertools lists the identity first
    pairwise = {f"{a}-{b}": rank_of(gw_costs(distances[a], distances[b], permutations), identity)
                for a, b in itertools.combinations(range(len(views)), 2)}
    joint = None
    if len(views) == 3 and len(classes) <= MAX_JOINT_CLASSES:
        joint = rank_of(joint_costs(distances, permutations), (identity, identity))
    return {"codes": name, "classes": len(classes), "matchings": len(permutations), "pairwise_rank": pairwise,
            "joint_rank": joint, "joint_matchings": len(permutations) ** 2 if joint else None}


def codes_row(path: Path) -> dict[str, Any]:
    """``matching_row`` of a run's ``eval-codes.npz`` (``codes-0..M-1`` and ``labels``)."""
    data = np.load(path)
    modalities = sorted(int(name.split("-")[1]) for name in data.files if name.startswith("codes-"))
    return matching_row(str(path), [data[f"codes-{m}"] for m in modalities], data["labels"])


def raw_rows(dataset: str, seeds: list[int]) -> list[dict[str, Any]]:
    """``matching_row`` of a scenario's normalised views, as its agents read them: one per seed for
    the synthetic draw, one in all for a data file (``seeded_draws``)."""
    return [matching_row(f"raw {Path(dataset).stem}" + (f" seed {seed}" if config["dataset"] == "synthetic" else ""),
                         normalised_views(config, data), data.labels)
            for seed, config, data in seeded_draws(dataset, seeds)]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| codes | C | pairwise rank of the truth (of C!) | joint rank (of (C!)^2) | joint percentile |",
             "|---|---|---|---|---|"]
    for row in rows:
        pairs = ", ".join(f"{pair}: {rank}" for pair, rank in row["pairwise_rank"].items())
        joint = ("-", "-") if row["joint_rank"] is None else (
            str(row["joint_rank"]), f"{100 * row['joint_rank'] / row['joint_matchings']:.3f}%")
        lines.append(f"| {row['codes']} | {row['classes']} | {pairs} (of {row['matchings']}) | {joint[0]} | {joint[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("codes", type=Path, nargs="*", help="eval-codes.npz files of finished runs")
    parser.add_argument("--raw", default="", help="also these data sets' normalised views (names or scenario paths)")
    parser.add_argument("--seeds", type=seed_list, default="0", help="the seeds of --raw (the synthetic draw)")
    parser.add_argument("--json", type=Path, help="write one row per file here")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.codes if not path.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    raw = list(filter(None, args.raw.split(",")))
    if not (args.codes or raw):
        parser.error("give eval-codes.npz files or --raw data sets")
    try:
        rows = [codes_row(path) for path in args.codes] + [row for dataset in raw for row in raw_rows(dataset, args.seeds)]
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    print(table(rows))
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
