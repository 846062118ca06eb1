"""The simulation-only alignment diagnostic: batches rebuilt as the agents draw them, plan scores."""

import numpy as np
import pytest

from otm_fed.agent import ModalityAgent
from otm_fed.alignment import alignment_scores, batch_sample_ids, pair_plan
from otm_fed.config import resolve_config
from otm_fed.data import normalise_view
from otm_fed.mixer import OTMixer
from otm_fed.scenario import modality_data, scenario_dataset, view_normalisation
from otm_fed.supervised import fold_indices


@pytest.mark.parametrize("task", ["clustering", "classification"])
@pytest.mark.parametrize("aligned", [False, True])
def test_batch_ids_are_the_agents_own_batches_in_file_order(aligned, task):
    """Clustering agents draw from every sample, supervised ones from the fold's training rows;
    either way the rebuilt ids name exactly the rows each agent trains on."""
    config = resolve_config("synthetic", {"synthetic-samples": "90", "batch-size": "32", "seed": "3",
                                          "aligned": str(aligned), "task": task})
    dataset = scenario_dataset(config)
    ids = batch_sample_ids(config, dataset, [0, 1, 2], round_number=4, round_seed=77)
    test_rows = fold_indices(dataset.labels, config["n-folds"], config["fold"], config["seed"])[1]
    for modality in range(3):
        agent = ModalityAgent(modality, modality_data(config, modality), config)
        rows = agent.sample_batch(4, 32, 77)
        view = normalise_view(dataset.views[modality], view_normalisation(config, modality))
        np.testing.assert_array_equal(agent.data.train[rows], view[ids[modality]])
        if task != "clustering":
            assert not set(ids[modality]) & set(test_rows)  # never a test-fold sample
    assert np.array_equal(ids[0], ids[1]) == aligned  # unaligned: independent orders and batches


def test_aligned_scenarios_draw_the_same_samples_in_every_modality():
    config = resolve_config("synthetic", {"synthetic-samples": "90", "batch-size": "32", "seed": "3",
                                          "aligned": "true"})
    ids = batch_sample_ids(config, scenario_dataset(config), [0, 1, 2], round_number=4, round_seed=77)
    assert len(ids[0]) == 32 and all(np.array_equal(ids[0], other) for other in ids[1:])


def test_perfect_plans_score_one_and_uniform_plans_score_chance():
    n = 8
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    ids_a = np.arange(n)
    order = np.random.default_rng(0).permutation(n)
    perfect = [np.eye(n) / n, np.eye(n)[np.argsort(order)] / n]  # modality b holds the samples permuted
    ids = [ids_a, order]
    assert pair_plan(*perfect).sum(1) == pytest.approx(np.ones(n))
    scores = alignment_scores(perfect, ids, labels)
    assert scores["true_mass"] == pytest.approx(1.0) and scores["top1"] == 1.0
    assert scores["class_mass"] == pytest.approx(1.0)
    uniform = [np.full((n, n), 1 / n**2)] * 2
    scores = alignment_scores(uniform, ids, labels)
    assert scores["true_mass"] == pytest.approx(1 / n) == scores["true_mass_chance"]
    assert scores["class_mass"] == pytest.approx(0.25) == scores["class_mass_chance"]


def test_mixer_aligns_identical_views_permuted():
    """Two agents holding the same codes in different orders: the FGW plans find the permutation."""
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(40, 4))
    order = rng.permutation(40)
    result = OTMixer(alpha=0.5)([codes, codes[order]], seed=0)
    scores = alignment_scores(result.transport_plans, [np.arange(40), order], np.arange(40) % 5)
    assert scores["top1"] == 1.0 and scores["true_mass"] > 0.99


@pytest.mark.parametrize("shared_init", [False, True])
def test_shared_init_gives_orl_agents_one_coordinate_system(data_dir, shared_init):
    """ORL's two views are one file permuted twice. With ``shared-init`` the agents' first codes
    are the same function of the same rows, so one round's FGW plans put almost all of a sample's
    mass on its true counterpart; independently initialised encoders land near chance (1/200)."""
    config = resolve_config("orl", {"data-dir": str(data_dir), "shared-init": str(shared_init)})
    agents = [ModalityAgent(m, modality_data(config, m, ""), config) for m in (0, 1)]
    codes = [agent.query(1, config["batch-size"], seed=11) for agent in agents]
    result = OTMixer(alpha=config["alpha"], max_outer=config["max-outer"])(codes, seed=1)
    ids = batch_sample_ids(config, scenario_dataset(config), [0, 1], 1, 11)
    scores = alignment_scores(result.transport_plans, ids, np.zeros(400, dtype=int))
    if shared_init:
        assert scores["true_mass"] > 0.9 and scores["top1"] > 0.9
    else:
        assert scores["true_mass"] < 5 * scores["true_mass_chance"]
