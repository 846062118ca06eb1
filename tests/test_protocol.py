"""The wire protocol: valid payloads round-trip through Flower records, malformed ones are refused."""

import numpy as np
import pytest

from otm_fed.protocol import (
    LATENT_CODES,
    PLAN_SHAPE,
    PLAN_VALUES,
    Payload,
    ProtocolError,
    codes_reply,
    metrics_reply,
    read_codes_reply,
    predict_request,
    predictions_reply,
    read_evaluate_reply,
    read_predict_request,
    read_predictions_reply,
    read_train_request,
    train_request,
)
from otm_fed_flwr.records import from_records, to_records

D, N = 4, 6


def good_codes() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)


def test_codes_reply_round_trips_through_records():
    payload = from_records(to_records(codes_reply(2, good_codes())))
    modality, codes, anchor_codes = read_codes_reply(payload, latent_dim=D, max_rows=N)
    assert anchor_codes is None
    assert modality == (2, 0)  # (modality, site): a reply without a site is site 0
    np.testing.assert_array_equal(codes, good_codes())


def bad_codes_payloads() -> dict[str, Payload]:
    codes = good_codes()
    cases = {
        "wrong width": codes_reply(0, codes[:, :3]),
        "NaN": codes_reply(0, np.where(np.eye(N, D, dtype=bool), np.nan, codes).astype(np.float32)),
        "Inf": codes_reply(0, np.full((N, D), np.inf, np.float32)),
        "zero rows": codes_reply(0, codes[:0]),
        "too many rows": codes_reply(0, np.tile(codes, (2, 1))),
        "float64": Payload({"modality": 0}, {LATENT_CODES: codes.astype(np.float64)}),
        "1-D array": Payload({"modality": 0}, {LATENT_CODES: codes.ravel()}),
        "missing codes": Payload({"modality": 0}, {}),
        "extra array (raw features)": Payload({"modality": 0}, {LATENT_CODES: codes, "features": codes}),
        "labels smuggled in config": Payload({"modality": 0, "labels": "1,2,3"}, {LATENT_CODES: codes}),
        "metrics attached": Payload({"modality": 0}, {LATENT_CODES: codes}, {"n": 6.0}),
        "no modality": Payload({}, {LATENT_CODES: codes}),
        "negative modality": Payload({"modality": -1}, {LATENT_CODES: codes}),
        "integer codes": Payload({"modality": 0}, {LATENT_CODES: np.ones((N, D), np.int32)}),
    }
    return cases


@pytest.mark.parametrize("kind", list(bad_codes_payloads()))
def test_server_refuses_malformed_codes(kind):
    with pytest.raises(ProtocolError):
        read_codes_reply(bad_codes_payloads()[kind], latent_dim=D, max_rows=N)


def good_train_payload(n_b: int = 5) -> Payload:
    rng = np.random.default_rng(1)
    plan = np.full((n_b, N), 1.0 / (n_b * N))
    return train_request(3, N, 7, rng.standard_normal((n_b, D)).astype(np.float32), plan,
                         rng.standard_normal((N, D)).astype(np.float32))


def test_train_request_round_trips_and_validates():
    instruction = read_train_request(from_records(to_records(good_train_payload())), batch_rows=N, latent_dim=D)
    assert instruction.plan.shape == (5, N)
    np.testing.assert_allclose(instruction.plan.sum(0), 1.0 / N)
    assert instruction.server_gradient.shape == (N, D)


def bad_train_payloads() -> dict[str, Payload]:
    cases = {}
    payload = good_train_payload()
    payload.arrays[PLAN_VALUES] = payload.arrays[PLAN_VALUES] * 2.0
    cases["marginals off"] = payload
    payload = good_train_payload()
    payload.arrays[PLAN_SHAPE] = np.array([5, N + 1], np.int64)
    cases["plan shape does not match batch"] = payload
    payload = good_train_payload()
    payload.arrays[PLAN_VALUES] = -payload.arrays[PLAN_VALUES]
    cases["negative plan"] = payload
    payload = good_train_payload()
    payload.arrays["server-gradient"] = payload.arrays["server-gradient"][:2]
    cases["gradient rows"] = payload
    payload = good_train_payload()
    del payload.arrays["plan-rows"]
    cases["missing plan rows"] = payload
    payload = good_train_payload()
    payload.arrays["mixed-barycenter"] = payload.arrays["mixed-barycenter"][:, :2]
    cases["barycenter width"] = payload
    return cases


@pytest.mark.parametrize("kind", list(bad_train_payloads()))
def test_agent_refuses_malformed_train_requests(kind):
    with pytest.raises(ProtocolError):
        read_train_request(bad_train_payloads()[kind], batch_rows=N, latent_dim=D)


def test_evaluate_reply_scores_in_range_and_codes_only_when_asked():
    scores = {"purity": 0.5, "acc": 0.4, "nmi": 0.3, "ari": 0.2}
    modality, read, codes = read_evaluate_reply(metrics_reply(1, scores), D, fused_eval=False)
    assert (modality, read, codes) == ((1, 0), scores, None)
    with pytest.raises(ProtocolError):
        read_evaluate_reply(metrics_reply(1, {**scores, "purity": 3.0}), D, fused_eval=False)
    with pytest.raises(ProtocolError):
        read_evaluate_reply(metrics_reply(1, scores, {"eval-codes": good_codes()}), D, fused_eval=False)


def test_unknown_record_is_refused():
    records = to_records(codes_reply(0, good_codes()))
    from flwr.app import ConfigRecord

    records["secret"] = ConfigRecord({"ids": "1,2,3"})
    with pytest.raises(ProtocolError, match="unexpected records"):
        from_records(records)


def probabilities(levels: int = 2, rows: int = N, classes: int = 3) -> np.ndarray:
    logits = np.random.default_rng(2).standard_normal((levels, rows, classes))
    return (np.exp(logits) / np.exp(logits).sum(2, keepdims=True)).astype(np.float32)


def test_predict_request_and_reply_round_trip_through_records():
    levels, fused = read_predict_request(from_records(to_records(predict_request(4, [0.0, 0.3], True))))
    assert (levels, fused) == ([0.0, 0.3], True)
    reply = from_records(to_records(predictions_reply(1, "classification", [0.9, 0.7], probabilities())))
    assert set(reply.metrics) == {"accuracy-0", "accuracy-1"}
    modality, scores, outputs = read_predictions_reply(reply, "classification", 2, 3, fused_eval=True, n_test=N)
    assert (modality, scores) == ((1, 0), [0.9, 0.7])
    np.testing.assert_array_equal(outputs, probabilities())
    reply = predictions_reply(0, "regression", [0.4, 0.6])
    assert read_predictions_reply(reply, "regression", 2, 1, fused_eval=False) == ((0, 0), [0.4, 0.6], None)


def bad_predictions_payloads() -> dict[str, Payload]:
    unnormalised = probabilities()
    unnormalised[0, 0] *= 2
    return {
        "accuracy above 1": predictions_reply(0, "classification", [1.2, 0.5], probabilities()),
        "negative mae": predictions_reply(0, "regression", [-0.1, 0.5]),
        "one level missing": predictions_reply(0, "classification", [0.9], probabilities(levels=1)),
        "probabilities do not sum to 1": predictions_reply(0, "classification", [0.9, 0.7], unnormalised),
        "wrong test size": predictions_reply(0, "classification", [0.9, 0.7], probabilities(rows=N + 1)),
        "wrong class count": predictions_reply(0, "classification", [0.9, 0.7], probabilities(classes=4)),
        "outputs missing": predictions_reply(0, "classification", [0.9, 0.7]),
        "labels smuggled": Payload({"modality": 0}, {"test-outputs": probabilities(), "labels": np.arange(N)},
                                   {"accuracy-0": 0.9, "accuracy-1": 0.7}),
    }


@pytest.mark.parametrize("kind", list(bad_predictions_payloads()))
def test_server_refuses_malformed_predictions(kind):
    task = "regression" if kind == "negative mae" else "classification"
    with pytest.raises(ProtocolError):
        read_predictions_reply(bad_predictions_payloads()[kind], task, 2, 3, fused_eval=task == "classification",
                               n_test=N)


@pytest.mark.parametrize("levels", [[], [0.0, -0.5], [0.0, float("nan")], "0,0.1"])
def test_agent_refuses_bad_noise_levels(levels):
    payload = predict_request(1, [0.0], False)
    payload.config["noise-levels"] = levels
    with pytest.raises(ProtocolError, match="noise-levels"):
        read_predict_request(payload)


def good_train_reply() -> Payload:
    from otm_fed.protocol import train_reply

    scores = {"purity": 0.5, "acc": 0.4, "nmi": 0.3, "ari": 0.2}
    return train_reply(1, {"total": 2.0}, good_codes(), scores)


def test_piggy_backed_train_reply_round_trips():
    from otm_fed.protocol import read_train_reply

    reply = read_train_reply(from_records(to_records(good_train_reply())), D, N, next_codes=True, evaluation=True)
    assert (reply.modality, reply.losses, reply.scores["purity"]) == (1, {"total": 2.0}, 0.5)
    np.testing.assert_array_equal(reply.next_codes, good_codes())


def bad_train_replies() -> dict[str, Payload]:
    cases = {}
    for name, change in {
        "next codes NaN": lambda p: p.arrays[LATENT_CODES].__setitem__((0, 0), np.nan),
        "next codes too wide": lambda p: p.arrays.__setitem__(LATENT_CODES, np.zeros((N, D + 1), np.float32)),
        "next codes missing": lambda p: p.arrays.pop(LATENT_CODES),
        "extra array": lambda p: p.arrays.__setitem__("labels", np.zeros((N, 1), np.float32)),
        "loss Inf": lambda p: p.metrics.__setitem__("total", np.inf),
        "score missing": lambda p: p.metrics.pop("eval-ari"),
        "score out of range": lambda p: p.metrics.__setitem__("eval-nmi", 1.5),
        "modality a string": lambda p: p.config.__setitem__("modality", "0"),
    }.items():
        payload = good_train_reply()
        change(payload)
        cases[name] = payload
    return cases


@pytest.mark.parametrize("kind", list(bad_train_replies()))
def test_server_refuses_malformed_train_replies(kind):
    from otm_fed.protocol import read_train_reply

    with pytest.raises(ProtocolError):
        read_train_reply(bad_train_replies()[kind], D, N, next_codes=True, evaluation=True)


def test_scores_nobody_asked_for_are_refused():
    from otm_fed.protocol import read_train_reply

    with pytest.raises(ProtocolError, match="nobody asked for"):
        read_train_reply(good_train_reply(), D, N, next_codes=True, evaluation=False)


@pytest.mark.parametrize("config", [
    {"round": 0, "batch-size": 4, "seed": 1},
    {"round": 1, "batch-size": "4", "seed": 1},
    {"round": 1, "batch-size": 4},
    {"round": 1, "batch-size": 4, "seed": 1, "labels": "1,2"},
    {"round": 1, "batch-size": 4, "seed": True},
], ids=["round 0", "batch size a string", "no seed", "extra key", "seed a bool"])
def test_agent_refuses_malformed_query_and_train_configs(config):
    from otm_fed.protocol import read_query_request

    with pytest.raises(ProtocolError):
        read_query_request(Payload(dict(config)))
    with pytest.raises(ProtocolError):
        read_train_request(Payload(dict(config)), batch_rows=N, latent_dim=D)


def test_agent_refuses_a_partial_evaluation_request():
    with pytest.raises(ProtocolError, match="missing"):
        read_train_request(Payload({"round": 1, "batch-size": 4, "seed": 1, "n-clusters": 3}), N, D)
