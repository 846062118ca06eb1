"""Supervised mode (eq. 8): folds, noise energy, the supervised loss terms, the agent's labels,
late fusion, and a short supervised run on Prokaryotic that beats chance."""

import json

import numpy as np
import pytest
import torch

from otm_fed.agent import ModalityAgent
from otm_fed.config import ConfigError, resolve_config
from otm_fed.losses import supervised_loss, supervised_terms
from otm_fed.mixer import OTMixer
from otm_fed.models import Predictor
from otm_fed.protocol import TrainInstruction
from otm_fed.results import read_rounds
from otm_fed.scenario import fold_test_targets, modality_data, scenario_dataset, scenario_targets
from otm_fed.supervised import fold_indices, late_fusion, noisy_copies, parse_noise_levels, score
from otm_fed.uptake import READINGS as UPTAKE_READINGS
from launcher.inprocess import run_inprocess
from server.strategy import OTMStrategy

LABELS = np.repeat(np.arange(3), [50, 30, 20])


# --------------------------------------------------------------------------- folds


def test_folds_partition_the_rows_and_keep_class_shares():
    tests = []
    for fold in range(5):
        train, test = fold_indices(LABELS, 5, fold, seed=0)
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 100
        assert np.all(np.diff(test) > 0) and np.all(np.diff(train) > 0)  # file order
        assert np.bincount(LABELS[test]).tolist() == [10, 6, 4]  # stratified: each class split 5 ways
        tests.append(test)
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(100))


def test_folds_are_seeded():
    np.testing.assert_array_equal(fold_indices(LABELS, 5, 2, 7)[1], fold_indices(LABELS, 5, 2, 7)[1])
    assert not np.array_equal(fold_indices(LABELS, 5, 2, 7)[1], fold_indices(LABELS, 5, 2, 8)[1])


@pytest.mark.parametrize("n_folds,fold", [(1, 0), (5, 5), (5, -1)])
def test_bad_folds_are_refused(n_folds, fold):
    with pytest.raises(ValueError, match="fold"):
        fold_indices(LABELS, n_folds, fold, 0)


# --------------------------------------------------------------------------- noise


@pytest.fixture
def classification_config():
    return resolve_config("synthetic", {"synthetic-samples": "150", "batch-size": "32", "local-steps": "3",
                                        "task": "classification", "noise-levels": "0,0.1,0.3,0.5"})


def test_noise_energy_ratio_is_the_requested_one(classification_config):
    """Noise energy / data energy r means ||E||_F^2 = r ||X||_F^2 on a modality's normalised test inputs."""
    x = modality_data(classification_config, 1).evaluation
    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    noisy = noisy_copies(x, ratios, np.random.default_rng(0))
    measured = [float(np.sum((n.astype(np.float64) - x) ** 2) / np.sum(x.astype(np.float64) ** 2)) for n in noisy]
    np.testing.assert_allclose(measured, ratios, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(noisy[0], x)
    assert noisy[1].dtype == x.dtype and noisy[1].shape == x.shape


@pytest.mark.parametrize("text", ["0.1,0.2", "0,-0.1", "0,nan", "0,x"])
def test_bad_noise_levels_are_refused(text):
    with pytest.raises(ValueError):
        parse_noise_levels(text)


# --------------------------------------------------------------------------- loss terms


def test_supervised_losses_match_their_definitions():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected_ce = -(torch.log_softmax(logits, 1)[0, 0] + torch.log_softmax(logits, 1)[1, 2]) / 2
    assert float(supervised_loss(logits, labels, "ce")) == pytest.approx(float(expected_ce))
    predictions, targets = torch.tensor([[1.0], [-2.0], [0.5]]), torch.tensor([0.0, 1.0, 0.5])
    assert float(supervised_loss(predictions, targets, "mae")) == pytest.approx((1 + 3 + 0) / 3)
    assert float(supervised_loss(predictions, targets, "mse")) == pytest.approx((1 + 9 + 0) / 3)
    with pytest.raises(ValueError, match="unknown supervised loss"):
        supervised_loss(predictions, targets, "hinge")


def test_supervised_terms_score_both_codes_and_augmented_codes_against_the_same_labels():
    torch.manual_seed(0)
    predictor = Predictor(4, 8, 3)
    codes, projected = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        terms = supervised_terms(predictor, codes, labels, "ce", 0.5, projected)
        direct, mixed = (float(supervised_loss(predictor(z), labels, "ce")) for z in (codes, projected))
        assert set(supervised_terms(predictor, codes, labels, "ce", 0.5)) == {"supervised"}
    assert set(terms) == {"supervised", "supervised_mix"}
    assert float(terms["supervised"]) == pytest.approx(0.5 * direct)
    assert float(terms["supervised_mix"]) == pytest.approx(0.5 * mixed)
    assert direct != pytest.approx(mixed)  # the two terms score different codes


# --------------------------------------------------------------------------- agent data and training


def test_supervised_data_train_fold_unaligned_test_fold_aligned(classification_config):
    dataset = scenario_dataset(classification_config)
    train, test = fold_indices(dataset.labels, 5, 0, 0)
    first, second = modality_data(classification_config, 0), modality_data(classification_config, 1)
    assert first.train.shape == (120, 40) and first.evaluation.shape == (30, 40)
    np.testing.assert_array_equal(first.labels, dataset.labels[test])
    np.testing.assert_array_equal(first.evaluation_targets, second.evaluation_targets)
    np.testing.assert_array_equal(fold_test_targets(classification_config), dataset.labels[test])
    aligned = modality_data({**classification_config, "aligned": True}, 0)
    order = [int(np.flatnonzero((aligned.train == row).all(1))[0]) for row in first.train]
    assert sorted(order) == list(range(120)) and order != list(range(120))
    # each training row keeps its own label through the agent's private permutation
    np.testing.assert_array_equal(first.train_targets, dataset.labels[train][order])


def mixed_instruction(codes: np.ndarray, round_number: int) -> TrainInstruction:
    result = OTMixer(max_outer=2)([codes, codes[::-1].copy()], seed=round_number)
    return TrainInstruction(round_number, 32, 0, result.mixed_barycenter, result.transport_plans[0])


def test_agent_adds_eq8_with_its_batch_labels(classification_config):
    agent = ModalityAgent(0, modality_data(classification_config, 0), classification_config)
    codes = agent.query(1, 32, seed=0)
    labels = torch.from_numpy(agent.data.train_targets[agent.batch_indices])
    with torch.no_grad():
        expected = float(supervised_loss(agent.predictor(torch.from_numpy(codes)), labels, "ce"))
    terms = agent.train(mixed_instruction(codes, 1))
    assert terms["supervised"] == pytest.approx(expected, rel=1e-5)
    assert "supervised_mix" in terms
    losses = {k: v for k, v in terms.items() if k not in UPTAKE_READINGS}  # the guard's readings are not terms
    assert terms["total"] == pytest.approx(sum(v for k, v in losses.items() if k != "total"), rel=1e-5)
    local = agent.train(TrainInstruction(2, 32, 0))
    assert "supervised" in local and "supervised_mix" not in local and "latent_matching" not in local


def test_agent_predicts_probabilities_per_noise_level(classification_config):
    agent = ModalityAgent(0, modality_data(classification_config, 0), classification_config)
    for round_number in range(1, 31):
        agent.train(TrainInstruction(round_number, 32, 0))
    scores, outputs = agent.predict([0.0, 0.5, 4.0])
    assert outputs.shape == (3, 30, 6) and outputs.dtype == np.float32
    np.testing.assert_allclose(outputs.sum(2), 1.0, rtol=1e-5)
    assert scores == [score(level, agent.data.evaluation_targets, "classification") for level in outputs]
    assert scores[0] > 0.5 > 1 / 6  # a strong synthetic view, 30 rounds of local training
    assert scores[2] < scores[0]  # noise of 4x the data energy hurts
    assert agent.predict([0.0, 0.5, 4.0])[0] == scores  # seeded noise


def test_late_fusion_averages_outputs():
    first = np.array([[0.6, 0.4], [0.2, 0.8]])
    second = np.array([[0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(late_fusion([first, second]), [[0.4, 0.6], [0.3, 0.7]])
    assert score(late_fusion([first, second]), np.array([0, 1]), "classification") == 0.5
    assert score(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]), "regression") == 1.5


def test_regression_target_is_standardised_and_only_for_synthetic():
    config = resolve_config("synthetic-regression")
    targets = scenario_targets(config)
    assert targets.dtype == np.float32 and targets.shape == (600,)
    assert abs(float(targets.mean())) < 1e-5 and float(targets.std()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ConfigError, match="needs dataset synthetic"):
        resolve_config("prokaryotic", {"task": "regression", "loss": "mae"})
    with pytest.raises(ConfigError, match="loss for task regression"):
        resolve_config("synthetic-regression", {"loss": "ce"})


# --------------------------------------------------------------------------- end to end


def test_supervised_run_on_prokaryotic_beats_chance(tmp_path, data_dir):
    """OTM with eq. 8, 12 rounds through the ServerApp and ClientApp on the in-process engine
    (Flower's simulation engine gives the same numbers here but takes about 70 s instead of 12):
    the proteome view and late fusion beat the test fold's majority share 0.568 (63 of 111)."""
    config = resolve_config("prokaryotic", {"task": "classification", "rounds": "12", "eval-every": "12",
                                            "batch-size": "128", "supervised-weight": "10", "data-dir": str(data_dir),
                                            "noise-levels": "0,0.5", "gate-threshold": "0"})  # all mix, every round
    run_dir = run_inprocess(config, 3, tmp_path / "run")
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    per_modality = final["accuracy_per_modality"]
    assert len(per_modality) == 3 and len(final["accuracy_noise_per_modality"][0]) == 2
    assert per_modality[1] > 0.68 and final["late_fusion_accuracy"] > 0.68  # 0.748 and 0.721 measured
    assert min(per_modality) >= 0.56
    noisy = final["late_fusion_accuracy_noise"]
    assert len(noisy) == 3 and all(curve[0] == final["late_fusion_accuracy"] for curve in noisy)
    assert final["accuracy_noise_per_modality"][1][1] < per_modality[1]  # noise 0.5 on the proteome view
    alignment = [row["alignment"] for row in read_rounds(run_dir) if "alignment" in row]
    assert len(alignment) == 12  # batches of the fold's training rows, rebuilt by the server
    assert all(a["true_mass_chance"] == pytest.approx(1 / 128) and 0 <= a["class_mass"] <= 1 for a in alignment)


def test_regression_agent_learns_the_hidden_target():
    config = resolve_config("synthetic-regression", {"synthetic-samples": "200", "batch-size": "64",
                                                     "supervised-weight": "10"})
    agent = ModalityAgent(0, modality_data(config, 0), config)
    for round_number in range(1, 41):
        agent.train(TrainInstruction(round_number, 64, 0))
    scores, outputs = agent.predict([0.0])
    assert outputs.shape == (1, 40, 1)
    baseline = float(np.mean(np.abs(agent.data.evaluation_targets)))  # predicting the mean, 0
    assert scores[0] < 0.6 * baseline


EVALUATE_REPLIES: list[dict] = []


class RecordingStrategy(OTMStrategy):
    """OTM, unchanged, that records each EVALUATE reply's records before using them."""

    def valid_replies(self, replies, kind):
        replies = list(replies)
        if kind == "evaluate":
            EVALUATE_REPLIES.extend({name: dict(record) for name, record in reply.content.items()}
                                    for reply in replies)
        return super().valid_replies(replies, kind)


def test_supervised_evaluate_replies_carry_scores_and_test_outputs_only(tmp_path):
    EVALUATE_REPLIES.clear()
    config = resolve_config("synthetic", {"task": "classification", "synthetic-samples": "120", "rounds": "2",
                                          "eval-every": "2", "batch-size": "32", "noise-levels": "0,0.4",
                                          "strategy": "tests.test_supervised:RecordingStrategy"})
    run_dir = run_inprocess(config, 3, tmp_path / "run")
    assert len(EVALUATE_REPLIES) == 3
    for records in EVALUATE_REPLIES:
        assert set(records) == {"config", "metrics", "arrays"} and set(records["config"]) == {"modality"}
        assert set(records["metrics"]) == {"accuracy-0", "accuracy-1"}
        assert {name: (array.numpy().dtype, array.numpy().shape) for name, array in records["arrays"].items()} == {
            "test-outputs": (np.float32, (2, 24, 6))}
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert final["noise_levels"] == [0.0, 0.4] and len(final["late_fusion_accuracy_noise"]) == 3
