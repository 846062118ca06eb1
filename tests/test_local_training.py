"""Local training beyond eq. 6: the view's reconstruction error, the neighbour term and the rules
that set them from the data."""

import math

import numpy as np
import pytest
import torch

from otm_fed.agent import (nearest_neighbours, neighbour_count, null_reconstruction_error,
                           reconstruction_error)
from otm_fed.config import resolve_config
from otm_fed.data import normalise_view
from otm_fed.losses import LossWeights, cosine_error, local_loss, neighbour_embedding_loss


def test_cosine_error_value_and_gradient():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    assert cosine_error(a, b).item() == pytest.approx((1.0 + 0.0) / 2)
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[1.0, 1.0]], requires_grad=True)
    cosine_error(x, y).backward()
    # d(1 - cos)/dy = -(x / (|x||y|) - cos * y / |y|^2) = -[1, -1] / (2 sqrt 2)
    assert y.grad.numpy() == pytest.approx(np.array([[-1.0, 1.0]]) / (2 * math.sqrt(2)))


def test_cosine_error_ignores_scale_squared_error_does_not():
    x = torch.tensor([[0.6, 0.8]])
    assert cosine_error(x, 5 * x).item() == pytest.approx(0.0, abs=1e-7)
    terms = local_loss(x, torch.zeros(1, 2), 5 * x, LossWeights(reconstruction="cosine"))
    assert terms["reconstruction"].item() == pytest.approx(0.0, abs=1e-7)
    assert local_loss(x, torch.zeros(1, 2), 5 * x, LossWeights())["reconstruction"].item() == pytest.approx(16.0)


def test_neighbour_embedding_loss_value():
    codes = torch.tensor([[0.0], [0.0]])
    positives = torch.tensor([[0.0], [3.0]])
    # row 0: q(0,0) = 1 of 1 + 1/10; row 1: q(0,3) = 1/10 of the same sum
    expected = (-math.log(1 / 1.1) - math.log(0.1 / 1.1)) / 2
    assert neighbour_embedding_loss(codes, positives).item() == pytest.approx(expected)


def test_neighbour_embedding_gradient_pulls_a_row_towards_its_neighbour():
    codes = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([[1.0, 0.0], [5.0, 1.0], [0.0, 4.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: neighbour_embedding_loss(z, positives), (codes,))
    neighbour_embedding_loss(codes, positives).backward()
    step = codes.detach() - 0.1 * codes.grad
    assert ((step - positives).norm(dim=1) < (codes.detach() - positives).norm(dim=1)).all()


def test_neighbour_term_enters_the_local_loss_with_its_weight():
    x, codes = torch.ones(2, 3), torch.tensor([[0.0], [0.0]])
    positives = torch.tensor([[0.0], [3.0]])
    terms = local_loss(x, codes, x, LossWeights(neighbour=2.0), neighbour_codes=positives)
    assert terms["neighbour"].item() == pytest.approx(2.0 * neighbour_embedding_loss(codes, positives).item())
    assert terms["total"].item() == pytest.approx(terms["neighbour"].item())


def test_null_reconstruction_error_is_the_views_scale():
    rng = np.random.default_rng(0)
    zscored = normalise_view(rng.normal(size=(200, 7)) * 3 + 1, "zscore")
    assert null_reconstruction_error(zscored, "squared") == pytest.approx(7.0, rel=1e-5)
    same_direction = np.tile([[0.6, 0.8]], (5, 1)) * np.arange(1, 6)[:, None]
    assert null_reconstruction_error(same_direction, "cosine") == pytest.approx(0.0, abs=1e-6)


def test_nearest_neighbours_on_a_line_and_against_brute_force():
    line = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert nearest_neighbours(line, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    x = np.random.default_rng(1).normal(size=(50, 4))
    distances = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    assert (nearest_neighbours(x, 3, chunk=7) == np.argsort(distances, 1)[:, :3]).all()


def test_neighbour_count_rule():
    config = resolve_config("synthetic")
    assert neighbour_count(config, 400, 40) == 5  # ORL: classes of 10
    assert neighbour_count(config, 2000, 10) == 10
    assert neighbour_count(config, 30, 20) == 1
    assert neighbour_count({**config, "neighbours": 7}, 400, 40) == 7


def test_reconstruction_error_follows_the_views_normalisation():
    config = resolve_config("prokaryotic")  # l2, zscore, zscore
    assert [reconstruction_error(config, m) for m in range(3)] == ["cosine", "squared", "squared"]
    assert reconstruction_error({**config, "reconstruction": "squared"}, 0) == "squared"
    assert reconstruction_error(resolve_config("movies"), 1) == "cosine"  # tf-idf


def test_own_steps_cover_the_configured_epochs():
    from otm_fed.agent import ModalityAgent
    from otm_fed.scenario import modality_data

    config = resolve_config("synthetic", {"epochs": "100"})  # 600 rows, 30 rounds, batch 128, 5 steps
    agent = ModalityAgent(0, modality_data(config, 0), config)
    assert agent.own_steps() == 16 - 5  # ceil(100 * 600 / (30 * 128)) steps a round in all
    assert ModalityAgent(0, agent.data, {**config, "epochs": 0}).own_steps() == 0
    assert ModalityAgent(0, agent.data, {**config, "rounds": 1000}).own_steps() == 0  # local-steps suffice
    # a site whose kept batch is its 25-row share makes up the rest on full batches
    assert agent.own_steps(kept_rows=25) == 15  # ceil((100 * 600 / 30 - 5 * 25) / 128)


def test_own_steps_train_on_fresh_rows_and_keep_the_batch_sent_to_the_server():
    from otm_fed.agent import ModalityAgent
    from otm_fed.protocol import TrainInstruction
    from otm_fed.scenario import modality_data

    config = resolve_config("synthetic", {"synthetic-samples": "120", "batch-size": "32", "rounds": "2"})
    agent = ModalityAgent(0, modality_data(config, 0), config)
    codes = agent.query(1, 32, seed=0)
    kept = agent.batch_indices.copy()
    agent.train(TrainInstruction(1, 32, 0, codes.astype(np.float64), np.eye(32) / 32))
    np.testing.assert_array_equal(agent.batch_indices, kept)
    steps = config["local-steps"] + agent.own_steps()
    assert agent.own_steps() == 188 - 5  # ceil(100 * 120 / (2 * 32))
    assert all(int(slots["step"]) == steps for slots in agent.optimiser.state_dict()["state"].values())


def test_bad_local_training_settings_are_refused():
    from otm_fed.config import ConfigError

    for key, value in (("neighbour-weight", "-1"), ("epochs", "-5"), ("reconstruction", "absolute")):
        with pytest.raises(ConfigError, match=key):
            resolve_config("synthetic", {key: value})


def trained_alone(scenario: str, modality: int, data_dir, overrides: dict | None = None):
    """Agent ``modality`` trained alone with the defaults (the local-only strategy's rounds):
    (its codes' k-means scores, raw k-means scores of its view)."""
    from otm_fed.agent import ModalityAgent
    from otm_fed.metrics import kmeans_scores
    from otm_fed.protocol import TrainInstruction
    from otm_fed.scenario import modality_data

    config = resolve_config(scenario, {"data-dir": str(data_dir), **(overrides or {})})
    data = modality_data(config, modality)
    agent = ModalityAgent(modality, data, config)
    for round_number in range(1, config["rounds"] + 1):
        agent.train(TrainInstruction(round_number, config["batch-size"], config["seed"]))
    raw = kmeans_scores(data.evaluation, data.labels, data.n_classes, 10, config["seed"])
    return agent.evaluate(data.n_classes, 10, config["seed"])[0], raw


@pytest.mark.parametrize("scenario, modality, overrides", [
    ("orl", 0, {}),  # 40 classes of 10 faces
    ("handwritten", 0, {"rounds": "40"}),  # FAC, 2000 digits; 40 rounds still cover 100 passes
])
def test_codes_trained_alone_cluster_clearly_better_than_the_raw_view(data_dir, scenario, modality, overrides):
    codes, raw = trained_alone(scenario, modality, data_dir, overrides)
    assert codes["acc"] > raw["acc"] + 0.05 and codes["purity"] > raw["purity"] + 0.05


def test_neighbours_are_found_once_and_travel_in_the_agent_state(monkeypatch):
    """A fresh process per message must not search the k-NN again (O(N^2 D)): the ids are part of
    the state, and the rebuilt agent trains exactly as the original."""
    import otm_fed.agent as agent_module
    from otm_fed.protocol import TrainInstruction
    from otm_fed.scenario import modality_data

    config = resolve_config("synthetic", {"synthetic-samples": "120", "batch-size": "32", "rounds": "4"})
    original = agent_module.ModalityAgent(0, modality_data(config, 0), config)
    assert original.neighbours is None  # nothing searched before a training step needs it
    original.train(TrainInstruction(1, 32, 0))
    state = original.state_arrays()
    assert state["neighbours"].shape == (120, neighbour_count(config, 120, 6))

    def no_search(*args, **kwargs):
        raise AssertionError("the k-NN were searched again")

    monkeypatch.setattr(agent_module, "nearest_neighbours", no_search)
    rebuilt = agent_module.ModalityAgent(0, original.data, config)
    rebuilt.load_state_arrays(state)
    assert rebuilt.train(TrainInstruction(2, 32, 0)) == original.train(TrainInstruction(2, 32, 0))
