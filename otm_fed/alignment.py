"""Simulation-only alignment diagnostic: how much of the mixer's plan mass lands on true counterparts.

Only a simulation knows which rows of different agents are the same sample; a deployment never
does (agents send no sample ids). Like ``fused-eval``, this is a diagnostic of the simulation:
the server rebuilds each agent's batch from the scenario with the agents' own definitions
(``otm_fed.scenario.training_order`` and ``batch_rows``), and scores the plans T_m. In supervised
mode the batches are drawn from the fold's training rows, so the same rebuild applies.

Modalities a and b meet through the barycenter: P_ab = T_a^T diag(1/mu_B) T_b (N_a x N_b,
rows summing to 1/N_a), so row i of N_a P_ab is where sample i of modality a sends its mass in
modality b.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from otm_fed.data import MultiViewDataset
from otm_fed.scenario import batch_rows, training_order


def batch_sample_ids(config: Mapping[str, Any], dataset: MultiViewDataset, modalities: Sequence[int],
                     round_number: int, round_seed: int) -> list[np.ndarray]:
    """The samples (ids into ``dataset.labels``) of each listed agent's batch in a round
    (simulation only, one site per modality); views that hold different samples share only the
    samples both hold."""
    ids = []
    for modality in modalities:
        order = training_order(config, modality, dataset)
        rows = order[batch_rows(len(order), modality, round_number, config["batch-size"], round_seed, config["aligned"])]
        ids.append(dataset.samples_of(modality)[rows])
    return ids


def pair_plan(plan_a: np.ndarray, plan_b: np.ndarray) -> np.ndarray:
    """N_a T_a^T diag(1/mu_B) T_b: row i is sample i's mass over modality b's batch (sums to 1)."""
    mu_b = plan_a.sum(1)
    return plan_a.shape[1] * (plan_a.T @ (plan_b / mu_b[:, None]))


def alignment_scores(transport_plans: Sequence[np.ndarray], sample_ids: Sequence[np.ndarray],
                     labels: np.ndarray) -> dict[str, float]:
    """Means over modality pairs (a < b) of:

    * ``true_mass``: the mass a sample sends to its true counterpart (over the samples whose
      counterpart is in the other batch); chance ``true_mass_chance`` = 1 / N_b;
    * ``top1``: the share of those samples whose largest mass lands on their counterpart;
    * ``class_mass``: the mass that lands on samples of the same class; chance
      ``class_mass_chance`` = sum_c p_a(c) p_b(c).

    ``true_mass``, ``true_mass_chance`` and ``top1`` average only the pairs whose batches share a
    sample, and are all three left out when no pair does (batches drawn independently from a
    large data set often share none): there is nothing to measure, and no number stands in.
    """
    if len(transport_plans) != len(sample_ids):
        raise ValueError(f"need one id list per plan, got {len(transport_plans)} plans and {len(sample_ids)}")
    if len(transport_plans) < 2:
        raise ValueError("alignment needs at least two modalities")
    scores: dict[str, list[float]] = {name: [] for name in
                                      ("true_mass", "true_mass_chance", "top1", "class_mass", "class_mass_chance")}
    n_classes = int(labels.max()) + 1
    for a, b in combinations(range(len(transport_plans)), 2):
        rows = pair_plan(transport_plans[a], transport_plans[b])
        ids_a, ids_b = sample_ids[a], sample_ids[b]
        position_in_b = {sample: j for j, sample in enumerate(ids_b)}
        shared = [(i, position_in_b[sample]) for i, sample in enumerate(ids_a) if sample in position_in_b]
        if shared:
            i, j = np.array(shared).T
            scores["true_mass"].append(float(rows[i, j].mean()))
            scores["top1"].append(float((rows[i].argmax(1) == j).mean()))
            scores["true_mass_chance"].append(1.0 / len(ids_b))
        labels_a, labels_b = labels[ids_a], labels[ids_b]
        scores["class_mass"].append(float((rows * (labels_a[:, None] == labels_b[None, :])).sum() / len(ids_a)))
        share_a = np.bincount(labels_a, minlength=n_classes) / len(ids_a)
        share_b = np.bincount(labels_b, minlength=n_classes) / len(ids_b)
        scores["class_mass_chance"].append(float(share_a @ share_b))
    return {name: float(np.mean(values)) for name, values in scores.items() if values}
