"""A modality agent's local steps, and its state surviving a fresh process exactly."""

import numpy as np
import torch
import pytest

from otm_fed.agent import ModalityAgent
from otm_fed.config import resolve_config
from otm_fed.mixer import OTMixer
from otm_fed.protocol import TrainInstruction
from otm_fed.scenario import modality_data


@pytest.fixture
def config():
    return resolve_config("synthetic", {"synthetic-samples": "120", "batch-size": "32", "local-steps": "3"})


def mixed_instruction(agent: ModalityAgent, codes: np.ndarray, round_number: int) -> TrainInstruction:
    result = OTMixer(max_outer=2)([codes, codes[::-1].copy()], seed=round_number)
    return TrainInstruction(round_number, 32, 0, result.mixed_barycenter, result.transport_plans[0])


def test_unaligned_training_rows_are_a_private_permutation(config):
    first, second = modality_data(config, 0), modality_data(config, 1)
    assert first.train.shape == (120, 40) and second.train.shape == (120, 30)
    aligned = modality_data({**config, "aligned": True}, 0)
    order = [np.flatnonzero((aligned.train == row).all(1))[0] for row in first.train]
    assert sorted(order) == list(range(120)) and order != list(range(120))


def test_query_keeps_its_batch_and_returns_float32_codes(config):
    agent = ModalityAgent(0, modality_data(config, 0), config)
    codes = agent.query(1, 32, seed=5)
    assert codes.dtype == np.float32 and codes.shape == (32, config["latent-dim"])
    assert len(agent.batch_indices) == 32 and agent.batch_round == 1
    np.testing.assert_array_equal(codes, agent.encode(agent.data.train[agent.batch_indices]))


def test_training_on_the_mix_lowers_the_loss(config):
    agent = ModalityAgent(0, modality_data(config, 0), config)
    totals = []
    for round_number in range(1, 8):
        codes = agent.query(round_number, 32, seed=0)
        totals.append(agent.train(mixed_instruction(agent, codes, round_number))["total"])
    assert totals[-1] < 0.8 * totals[0]


@pytest.mark.parametrize("task", ["clustering", "classification"])
def test_state_arrays_restore_an_identical_agent(config, task):
    """Flower's deployment engine may start a fresh process per message: an agent rebuilt from
    its state (WAE, supervised predictor h_m, Adam moments, kept batch) must continue exactly as
    the original would."""
    config = {**config, "task": task}
    original = ModalityAgent(1, modality_data(config, 1), config)
    codes = original.query(1, 32, seed=0)
    original.train(mixed_instruction(original, codes, 1))
    codes = original.query(2, 32, seed=0)
    rebuilt = ModalityAgent(1, modality_data(config, 1), config)
    rebuilt.load_state_arrays(original.state_arrays())
    instruction = mixed_instruction(original, codes, 2)
    assert original.train(instruction) == rebuilt.train(instruction)
    np.testing.assert_array_equal(original.query(3, 32, 0), rebuilt.query(3, 32, 0))
    if task == "classification":
        assert any(name.startswith("predictor.") for name in original.state_arrays())
        original_scores, original_outputs = original.predict([0.0, 0.2])
        rebuilt_scores, rebuilt_outputs = rebuilt.predict([0.0, 0.2])
        assert original_scores == rebuilt_scores
        np.testing.assert_array_equal(original_outputs, rebuilt_outputs)


def test_evaluate_scores_own_codes_against_local_labels(config):
    agent = ModalityAgent(0, modality_data(config, 0), config)
    scores, codes = agent.evaluate(n_clusters=6, kmeans_init=3, seed=0)
    assert codes.shape == (120, config["latent-dim"])
    assert 1 / 6 < scores["purity"] <= 1.0 and set(scores) == {"purity", "acc", "nmi", "ari"}


def test_shared_init_starts_equal_widths_from_one_encoder(config):
    """With ``shared-init`` the initial weights depend on the view width, not the modality: equal
    widths give identical encoders, other widths (and the default) give different ones."""
    shared = {**config, "shared-init": True, "synthetic-dims": "40,40,20"}
    weights = [ModalityAgent(m, modality_data(shared, m), shared).model.encoder[2].weight for m in range(3)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0][:, :20], weights[2][:, :20])
    own = {**shared, "shared-init": False}
    first, second = (ModalityAgent(m, modality_data(own, m), own).model.encoder[2].weight for m in (0, 1))
    assert not torch.equal(first, second)
