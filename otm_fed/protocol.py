"""The wire protocol: every message's record names, shapes, dtypes and their validation.

This is the one place that says what crosses the wire. A message is a ``Payload``: a flat
``config`` (ints, floats, strings, bools), named numpy ``arrays`` and float ``metrics``; the
Flower adapters map these onto a RecordDict with a ConfigRecord "config", an ArrayRecord
"arrays" and a MetricRecord "metrics", and nothing else.

One round:

1. QUERY   server -> agent: config {round, batch-size, seed}.
   reply   agent -> server: config {modality}, arrays {latent-codes: float32 N_m x d}. Only codes:
           no raw features, labels or sample ids. With ``anchors`` = K > 0 (beyond the paper) also
           a record of its own, anchors {anchor-codes: float32 k x d, anchor-positions: int64 k}:
           the codes of the k <= K declared anchor samples the agent holds and their positions in
           the anchor order all agents share (absent when it holds none); these rows alone are in
           correspondence across agents (the batch's rows stay unaligned).
2. TRAIN   server -> agent: config {round, batch-size, seed}, arrays {mixed-barycenter: float32
           N_B x d, plan-rows/plan-cols: int64, plan-values: float64, plan-shape: int64 [N_B, N_m],
           and optionally server-gradient: float32 N_m x d}; no arrays for local-only training.
           Piggy-backing (fewer exchanges): config may add next-seed (then the agent draws the
           next round's batch after training and sends its codes: the encoder is the one the
           next QUERY would use) and the EVALUATE keys (then the agent evaluates after training).
   reply   agent -> server: config {modality}, metrics {loss terms}; with next-seed also arrays
           {latent-codes} (and, with anchors, the anchors record); with evaluation also metrics {eval-purity, eval-acc, eval-nmi,
           eval-ari} and, with fused-eval, arrays {eval-codes}.
3. EVALUATE server -> agent: config {round, n-clusters, kmeans-init, fused-eval}.
   reply   agent -> server: config {modality}, metrics {purity, acc, nmi, ari}; with fused-eval
           (simulation only) also arrays {eval-codes: float32}, the evaluation set's codes in
           file order.
   Supervised (task classification or regression), instead:
   EVALUATE server -> agent: config {round, noise-levels: list of floats r (noise energy / data
           energy of the agent's own test inputs), fused-eval}.
   reply   agent -> server: config {modality}, metrics {accuracy-i or mae-i: the score on its own
           test fold at noise-levels[i]}; with fused-eval (simulation only, for late fusion) also
           arrays {test-outputs: float32 L x N_test x K, class probabilities or predictions of the
           test fold in file order}. Targets never cross the wire.

Several sites per modality (``sites``; clustering): every reply's config also states the agent's
site {site} unless it is 0, and

0. HELLO   server -> agent (message type ``query.hello``, once per node before its first QUERY):
           config {}.
   reply   agent -> server: config {modality, site, rows: its training rows N_s, width: its data's
           features}. The server deals each site its share of the modality's batch (``batch-size``
           in its QUERY and TRAIN, proportional to N_s) and refuses sites of one modality whose
           widths differ. TRAIN then carries the site's own columns of T_m, scaled to mass 1 (columns
           1/N_s; rows sum to what the site's rows take of each barycenter point), and FedAvg:
           config send-weights (the reply carries a record weights {the WAE's arrays}) and a record
           weights {the modality's row-weighted average}, which the site loads before training
           (Adam's moments stay its own). A site only ever receives its own modality's average.

An agent that refuses a request replies with an error (code ``REFUSED``) instead of a payload;
the server records every error, refusal and missing reply for its node and round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import numpy as np

from otm_fed.plans import SparsePlan, decode_plan, encode_plan
from otm_fed.supervised import SCORE_OF_TASK

QUERY, TRAIN, EVALUATE, HELLO = "query", "train", "evaluate", "query.hello"
CONFIG_RECORD, ARRAYS_RECORD, METRICS_RECORD, ANCHORS_RECORD = "config", "arrays", "metrics", "anchors"
WEIGHTS_RECORD = "weights"
RECORD_NAMES = (CONFIG_RECORD, ARRAYS_RECORD, METRICS_RECORD, ANCHORS_RECORD, WEIGHTS_RECORD)

LATENT_CODES = "latent-codes"
ANCHOR_CODES = "anchor-codes"
ANCHOR_POSITIONS = "anchor-positions"
MIXED_BARYCENTER = "mixed-barycenter"
PLAN_ROWS, PLAN_COLS, PLAN_VALUES, PLAN_SHAPE = "plan-rows", "plan-cols", "plan-values", "plan-shape"
SERVER_GRADIENT = "server-gradient"
EVAL_CODES = "eval-codes"
TEST_OUTPUTS = "test-outputs"
SCORE_NAMES = ("purity", "acc", "nmi", "ari")
EVAL_PREFIX = "eval-"
NEXT_SEED = "next-seed"
SEND_WEIGHTS = "send-weights"
EVALUATE_KEYS = ("n-clusters", "kmeans-init", "fused-eval")
MARGINAL_TOLERANCE = 1e-6
REFUSED = 400  # the error code of an agent's refusal of a malformed request


class ProtocolError(ValueError):
    """A payload that does not follow the protocol; it is refused, never used."""


@dataclass
class Payload:
    """What one message carries, Flower-free."""

    config: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    anchors: dict[str, np.ndarray] = field(default_factory=dict)  # the anchor samples' codes only
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # a WAE's arrays (sites' FedAvg only)


Agent = tuple[int, int]  # (modality, site)


@dataclass(frozen=True)
class AnchorCodes:
    """The codes of the anchors an agent holds: ``codes[i]`` = f_m(x) of the anchor at
    ``positions[i]`` of the K anchors, in the order every agent shares."""

    positions: np.ndarray  # int64, distinct, in [0, K)
    codes: np.ndarray  # float32, len(positions) x d


def _anchors(anchors: AnchorCodes | None) -> dict[str, np.ndarray]:
    return {} if anchors is None else {ANCHOR_CODES: np.asarray(anchors.codes, np.float32),
                                       ANCHOR_POSITIONS: np.asarray(anchors.positions, np.int64)}


def _read_anchors(what: str, payload: Payload, latent_dim: int, n_anchors: int) -> AnchorCodes | None:
    """The anchors record: the codes (width d) of the anchors the agent holds and their distinct
    positions among the K = ``n_anchors``; None when absent (the agent holds none) or K = 0."""
    if not n_anchors or not payload.anchors:
        _expect_keys(f"{what} anchors", payload.anchors, set())
        return None
    _expect_keys(f"{what} anchors", payload.anchors, {ANCHOR_CODES, ANCHOR_POSITIONS})
    codes = _matrix("anchor codes", payload.anchors[ANCHOR_CODES], np.float32, latent_dim, n_anchors)
    positions = payload.anchors[ANCHOR_POSITIONS]
    if not (isinstance(positions, np.ndarray) and positions.dtype == np.int64 and positions.shape == (len(codes),)):
        raise ProtocolError(f"anchor positions must be an int64 vector of {len(codes)}, one per anchor code row")
    if positions.min() < 0 or positions.max() >= n_anchors or len(np.unique(positions)) != len(positions):
        raise ProtocolError(f"anchor positions must be distinct, in 0..{n_anchors - 1}")
    return AnchorCodes(positions, codes)


def _expect_keys(what: str, found: Mapping[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:
    missing = required - set(found)
    extra = set(found) - required - set(optional)
    if missing or extra:
        raise ProtocolError(f"{what}: missing {sorted(missing)}, unexpected {sorted(extra)}")


def _matrix(what: str, array: Any, dtype: type, width: int | None = None,
            max_rows: int | None = None) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ProtocolError(f"{what} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise ProtocolError(f"{what} must be {np.dtype(dtype).name}, got {array.dtype}")
    if array.ndim != 2:
        raise ProtocolError(f"{what} must be 2-D, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ProtocolError(f"{what} has no rows")
    if width is not None and array.shape[1] != width:
        raise ProtocolError(f"{what} must have width {width}, got {array.shape[1]}")
    if max_rows is not None and array.shape[0] > max_rows:
        raise ProtocolError(f"{what} has {array.shape[0]} rows, more than the limit {max_rows}")
    if not np.all(np.isfinite(array)):
        raise ProtocolError(f"{what} contains NaN or Inf")
    return array


def _int(what: str, value: Any, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProtocolError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _agent(payload: Payload) -> Agent:
    """(modality, site) a reply states; site absent means 0."""
    modality, site = payload.config.get("modality"), payload.config.get("site", 0)
    if not isinstance(modality, int) or isinstance(modality, bool) or modality < 0:
        raise ProtocolError(f"reply must state its modality as a non-negative int, got {modality!r}")
    if not isinstance(site, int) or isinstance(site, bool) or site < 0:
        raise ProtocolError(f"reply must state its site as a non-negative int, got {site!r}")
    return modality, site


def _identity(agent: int | Agent) -> dict[str, int]:
    """A reply's config naming its agent: {modality}, and {site} unless it is 0."""
    modality, site = (agent, 0) if isinstance(agent, int) else agent
    return {"modality": modality, **({"site": site} if site else {})}


IDENTITY_KEYS = {"modality"}, {"site"}


def _weights(what: str, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not weights:
        raise ProtocolError(f"{what}: no weights")
    for name, array in weights.items():
        if not (isinstance(array, np.ndarray) and array.dtype == np.float32 and np.all(np.isfinite(array))):
            raise ProtocolError(f"{what}: weight {name} must be a finite float32 array")
    return dict(weights)


# --------------------------------------------------------------------------- HELLO


@dataclass
class Hello:
    agent: Agent
    rows: int  # N_s, the site's training rows
    width: int  # its data's features


def hello_request() -> Payload:
    return Payload()


def read_hello_request(payload: Payload) -> None:
    _expect_keys("hello config", payload.config, set())
    _expect_keys("hello arrays", payload.arrays, set())


def hello_reply(agent: int | Agent, rows: int, width: int) -> Payload:
    return Payload(config={**_identity(agent), "rows": rows, "width": width})


def read_hello_reply(payload: Payload) -> Hello:
    _expect_keys("hello reply config", payload.config, {"modality", "rows", "width"}, {"site"})
    _expect_keys("hello reply arrays", payload.arrays, set())
    return Hello(_agent(payload), _int("rows", payload.config["rows"], 1), _int("width", payload.config["width"], 1))


# --------------------------------------------------------------------------- QUERY


def query_request(round_number: int, batch_size: int, seed: int) -> Payload:
    return Payload(config={"round": round_number, "batch-size": batch_size, "seed": seed})


def read_query_request(payload: Payload) -> tuple[int, int, int]:
    """(round, batch-size, seed) of a QUERY, or ProtocolError."""
    _expect_keys("query config", payload.config, {"round", "batch-size", "seed"})
    _expect_keys("query arrays", payload.arrays, set())
    config = payload.config
    return _int("round", config["round"], 1), _int("batch-size", config["batch-size"], 1), _int("seed", config["seed"])


def codes_reply(agent: int | Agent, codes: np.ndarray, anchors: AnchorCodes | None = None) -> Payload:
    return Payload(config=_identity(agent), arrays={LATENT_CODES: np.asarray(codes, np.float32)},
                   anchors=_anchors(anchors))


def read_codes_reply(payload: Payload, latent_dim: int, max_rows: int,
                     n_anchors: int = 0) -> tuple[Agent, np.ndarray, AnchorCodes | None]:
    """((modality, site), Z_m, its anchors' codes or None) from a QUERY reply, or ProtocolError."""
    _expect_keys("codes reply config", payload.config, *IDENTITY_KEYS)
    _expect_keys("codes reply arrays", payload.arrays, {LATENT_CODES})
    _expect_keys("codes reply metrics", payload.metrics, set())
    codes = _matrix("latent codes", payload.arrays[LATENT_CODES], np.float32, latent_dim, max_rows)
    return _agent(payload), codes, _read_anchors("codes reply", payload, latent_dim, n_anchors)


# --------------------------------------------------------------------------- TRAIN


def train_request(round_number: int, batch_size: int, seed: int,
                  mixed_barycenter: np.ndarray | None = None, plan: np.ndarray | None = None,
                  server_gradient: np.ndarray | None = None, next_seed: int | None = None,
                  evaluation: Payload | None = None, send_weights: bool = False,
                  weights: Mapping[str, np.ndarray] | None = None) -> Payload:
    """TRAIN; ``next_seed`` asks for the next round's codes, ``evaluation`` (an
    ``evaluate_request``) for scores after training, ``send_weights`` for the WAE's weights, all
    in the reply; ``weights``: the modality's averaged WAE, to load before training."""
    payload = query_request(round_number, batch_size, seed)
    if next_seed is not None:
        payload.config[NEXT_SEED] = next_seed
    if send_weights:
        payload.config[SEND_WEIGHTS] = True
    if weights:
        payload.weights = {name: np.asarray(value, np.float32) for name, value in weights.items()}
    if evaluation is not None:
        payload.config.update({key: evaluation.config[key] for key in EVALUATE_KEYS})
    if mixed_barycenter is not None:
        sparse = encode_plan(plan)
        payload.arrays = {MIXED_BARYCENTER: np.asarray(mixed_barycenter, np.float32),
                          PLAN_ROWS: sparse.rows, PLAN_COLS: sparse.cols, PLAN_VALUES: sparse.values,
                          PLAN_SHAPE: np.asarray(sparse.shape, np.int64)}
        if server_gradient is not None:
            payload.arrays[SERVER_GRADIENT] = np.asarray(server_gradient, np.float32)
    return payload


@dataclass
class TrainInstruction:
    round: int
    batch_size: int
    seed: int
    mixed_barycenter: np.ndarray | None = None  # Z~_B
    plan: np.ndarray | None = None  # T_m, dense
    server_gradient: np.ndarray | None = None  # G_m
    next_seed: int | None = None  # send the next round's codes
    evaluation: dict[str, Any] | None = None  # evaluate after training: n-clusters, kmeans-init, fused-eval
    send_weights: bool = False  # send the WAE's weights (the modality's sites average them)
    weights: dict[str, np.ndarray] | None = None  # the modality's averaged WAE, loaded before training


def read_train_request(payload: Payload, batch_rows: int | None, latent_dim: int,
                       whole_plan: bool = True) -> TrainInstruction:
    """Validate a TRAIN message against the agent's kept batch (``batch_rows`` = N_m); a site of
    a modality held at several sites (``whole_plan`` False) gets its own columns of T_m, whose
    rows need not be uniform."""
    config = payload.config
    _expect_keys("train config", config, {"round", "batch-size", "seed"}, {NEXT_SEED, SEND_WEIGHTS, *EVALUATE_KEYS})
    instruction = TrainInstruction(_int("round", config["round"], 1), _int("batch-size", config["batch-size"], 1),
                                   _int("seed", config["seed"]))
    if NEXT_SEED in config:
        instruction.next_seed = _int(NEXT_SEED, config[NEXT_SEED])
    if SEND_WEIGHTS in config:
        if config[SEND_WEIGHTS] is not True:
            raise ProtocolError(f"{SEND_WEIGHTS} must be true when present, got {config[SEND_WEIGHTS]!r}")
        instruction.send_weights = True
    if payload.weights:
        instruction.weights = _weights("train weights", payload.weights)
    if any(key in config for key in EVALUATE_KEYS):
        _expect_keys("train evaluation config", {k: v for k, v in config.items() if k in EVALUATE_KEYS},
                     set(EVALUATE_KEYS))
        if not isinstance(config["fused-eval"], bool):
            raise ProtocolError(f"fused-eval must be a bool, got {config['fused-eval']!r}")
        instruction.evaluation = {"n-clusters": _int("n-clusters", config["n-clusters"], 1),
                                  "kmeans-init": _int("kmeans-init", config["kmeans-init"], 1),
                                  "fused-eval": config["fused-eval"]}
    if not payload.arrays:
        return instruction
    _expect_keys("train arrays", payload.arrays,
                 {MIXED_BARYCENTER, PLAN_ROWS, PLAN_COLS, PLAN_VALUES, PLAN_SHAPE}, {SERVER_GRADIENT})
    if batch_rows is None:
        raise ProtocolError("received a mix but holds no batch: no QUERY came first")
    mixed = _matrix("mixed barycenter", payload.arrays[MIXED_BARYCENTER], np.float32, latent_dim)
    shape = payload.arrays[PLAN_SHAPE]
    if not (isinstance(shape, np.ndarray) and shape.dtype == np.int64 and shape.shape == (2,)):
        raise ProtocolError("plan-shape must be an int64 array [N_B, N_m]")
    if tuple(shape) != (mixed.shape[0], batch_rows):
        raise ProtocolError(f"plan shape {tuple(shape)} does not match (N_B, N_m) = "
                            f"({mixed.shape[0]}, {batch_rows})")
    for name, dtype in ((PLAN_ROWS, np.int64), (PLAN_COLS, np.int64), (PLAN_VALUES, np.float64)):
        array = payload.arrays[name]
        if not (isinstance(array, np.ndarray) and array.dtype == dtype and array.ndim == 1):
            raise ProtocolError(f"{name} must be a 1-D {np.dtype(dtype).name} array")
    values = payload.arrays[PLAN_VALUES]
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ProtocolError("plan values must be finite and non-negative")
    try:
        plan = decode_plan(SparsePlan(payload.arrays[PLAN_ROWS], payload.arrays[PLAN_COLS], values,
                                      (int(shape[0]), int(shape[1]))))
    except ValueError as error:
        raise ProtocolError(str(error)) from error
    n_b, n_m = plan.shape
    if ((whole_plan and np.abs(plan.sum(1) - 1.0 / n_b).max() > MARGINAL_TOLERANCE)
            or np.abs(plan.sum(0) - 1.0 / n_m).max() > MARGINAL_TOLERANCE):
        raise ProtocolError("plan marginals are not uniform (1/N_B rows, 1/N_m columns)" if whole_plan else
                            "plan columns do not each carry 1/N_m")
    instruction.mixed_barycenter, instruction.plan = mixed, plan
    if SERVER_GRADIENT in payload.arrays:
        gradient = _matrix("server gradient", payload.arrays[SERVER_GRADIENT], np.float32, latent_dim)
        if gradient.shape[0] != batch_rows:
            raise ProtocolError(f"server gradient has {gradient.shape[0]} rows, batch has {batch_rows}")
        instruction.server_gradient = gradient
    return instruction


def metrics_reply(agent: int | Agent, metrics: Mapping[str, float],
                  arrays: Mapping[str, np.ndarray] | None = None) -> Payload:
    return Payload(config=_identity(agent), metrics={k: float(v) for k, v in metrics.items()},
                   arrays=dict(arrays or {}))


def train_reply(agent: int | Agent, losses: Mapping[str, float], next_codes: np.ndarray | None = None,
                scores: Mapping[str, float] | None = None, eval_codes: np.ndarray | None = None,
                next_anchor_codes: AnchorCodes | None = None,
                weights: Mapping[str, np.ndarray] | None = None) -> Payload:
    metrics = {**losses, **{EVAL_PREFIX + name: value for name, value in (scores or {}).items()}}
    arrays = {LATENT_CODES: next_codes, EVAL_CODES: eval_codes}
    reply = metrics_reply(agent, metrics, {name: np.asarray(value, np.float32) for name, value in arrays.items()
                                           if value is not None})
    reply.anchors = _anchors(next_anchor_codes)
    reply.weights = {name: np.asarray(value, np.float32) for name, value in (weights or {}).items()}
    return reply


@dataclass
class TrainReply:
    agent: Agent  # (modality, site)
    losses: dict[str, float]
    next_codes: np.ndarray | None = None  # Z_m of the next round's batch
    next_anchor_codes: AnchorCodes | None = None  # with next_codes: the codes of the anchors it holds
    scores: dict[str, float] | None = None
    eval_codes: np.ndarray | None = None
    weights: dict[str, np.ndarray] | None = None  # the WAE's arrays, when asked for

    @property
    def modality(self) -> int:
        return self.agent[0]


def read_train_reply(payload: Payload, latent_dim: int, max_rows: int, next_codes: bool = False,
                     evaluation: bool = False, fused_eval: bool = False, n_anchors: int = 0,
                     weights: Collection[int] = ()) -> TrainReply:
    """A TRAIN reply with exactly the parts asked for (next codes with their anchors, scores, eval
    codes, and the WAE's weights from a site of a modality in ``weights``)."""
    _expect_keys("train reply config", payload.config, *IDENTITY_KEYS)
    expected_arrays = ({LATENT_CODES} if next_codes else set()) | ({EVAL_CODES} if evaluation and fused_eval else set())
    _expect_keys("train reply arrays", payload.arrays, expected_arrays)
    if not all(np.isfinite(v) for v in payload.metrics.values()):
        raise ProtocolError("train reply metrics contain NaN or Inf")
    losses = {k: v for k, v in payload.metrics.items() if not k.startswith(EVAL_PREFIX)}
    reply = TrainReply(_agent(payload), losses)
    if reply.modality in weights:
        reply.weights = _weights("train reply weights", payload.weights)
    elif payload.weights:
        raise ProtocolError("train reply carries weights nobody asked for")
    reply.next_anchor_codes = _read_anchors("train reply", payload, latent_dim, n_anchors if next_codes else 0)
    if next_codes:
        reply.next_codes = _matrix("latent codes", payload.arrays[LATENT_CODES], np.float32, latent_dim, max_rows)
    scores = {k.removeprefix(EVAL_PREFIX): v for k, v in payload.metrics.items() if k.startswith(EVAL_PREFIX)}
    if evaluation:
        reply.scores, reply.eval_codes = _read_scores(scores, payload.arrays, latent_dim, fused_eval)
    elif scores:
        raise ProtocolError(f"train reply carries scores {sorted(scores)} nobody asked for")
    return reply


# --------------------------------------------------------------------------- EVALUATE


def evaluate_request(round_number: int, n_clusters: int, kmeans_init: int, fused_eval: bool) -> Payload:
    return Payload(config={"round": round_number, "n-clusters": n_clusters,
                           "kmeans-init": kmeans_init, "fused-eval": fused_eval})


def _read_scores(scores: Mapping[str, float], arrays: Mapping[str, np.ndarray], latent_dim: int,
                 fused_eval: bool) -> tuple[dict[str, float], np.ndarray | None]:
    _expect_keys("evaluation scores", scores, set(SCORE_NAMES))
    if not all(np.isfinite(v) and -1.0 <= v <= 1.0 for v in scores.values()):
        raise ProtocolError(f"evaluation scores must be finite and in [-1, 1], got {dict(scores)}")
    codes = _matrix("eval codes", arrays[EVAL_CODES], np.float32, latent_dim) if fused_eval else None
    return dict(scores), codes


def read_evaluate_request(payload: Payload) -> tuple[int, int, bool]:
    """(n-clusters, kmeans-init, fused-eval) of an EVALUATE, or ProtocolError."""
    _expect_keys("evaluate config", payload.config, {"round", *EVALUATE_KEYS})
    _expect_keys("evaluate arrays", payload.arrays, set())
    config = payload.config
    if not isinstance(config["fused-eval"], bool):
        raise ProtocolError(f"fused-eval must be a bool, got {config['fused-eval']!r}")
    return _int("n-clusters", config["n-clusters"], 1), _int("kmeans-init", config["kmeans-init"], 1), config["fused-eval"]


def read_evaluate_reply(payload: Payload, latent_dim: int,
                        fused_eval: bool) -> tuple[Agent, dict[str, float], np.ndarray | None]:
    _expect_keys("evaluate reply config", payload.config, *IDENTITY_KEYS)
    _expect_keys("evaluate reply arrays", payload.arrays, {EVAL_CODES} if fused_eval else set())
    scores, codes = _read_scores(payload.metrics, payload.arrays, latent_dim, fused_eval)
    return _agent(payload), scores, codes


# --------------------------------------------------------------------------- EVALUATE, supervised


def predict_request(round_number: int, noise_levels: list[float], fused_eval: bool) -> Payload:
    return Payload(config={"round": round_number, "noise-levels": [float(level) for level in noise_levels],
                           "fused-eval": fused_eval})


def read_predict_request(payload: Payload) -> tuple[list[float], bool]:
    """(noise levels, fused-eval) from a supervised EVALUATE, or ProtocolError."""
    _expect_keys("predict config", payload.config, {"round", "noise-levels", "fused-eval"})
    _expect_keys("predict arrays", payload.arrays, set())
    levels = payload.config["noise-levels"]
    if not (isinstance(levels, list) and levels and all(isinstance(level, float) and np.isfinite(level)
                                                        and level >= 0 for level in levels)):
        raise ProtocolError(f"noise-levels must be a non-empty list of non-negative floats, got {levels!r}")
    return levels, bool(payload.config["fused-eval"])


def score_keys(task: str, n_levels: int) -> list[str]:
    """The metric names of a predictions reply: ``accuracy-0``, ``accuracy-1``, ... (or ``mae-i``)."""
    return [f"{SCORE_OF_TASK[task]}-{index}" for index in range(n_levels)]


def predictions_reply(modality: int | Agent, task: str, scores: list[float], outputs: np.ndarray | None = None) -> Payload:
    return metrics_reply(modality, dict(zip(score_keys(task, len(scores)), scores)),
                         None if outputs is None else {TEST_OUTPUTS: np.asarray(outputs, np.float32)})


def read_predictions_reply(payload: Payload, task: str, n_levels: int, n_outputs: int, fused_eval: bool,
                           n_test: int | None = None) -> tuple[Agent, list[float], np.ndarray | None]:
    """((modality, site), score per noise level, test outputs L x N_test x K or None), or ProtocolError."""
    keys = score_keys(task, n_levels)
    _expect_keys("predictions reply config", payload.config, *IDENTITY_KEYS)
    _expect_keys("predictions reply metrics", payload.metrics, set(keys))
    _expect_keys("predictions reply arrays", payload.arrays, {TEST_OUTPUTS} if fused_eval else set())
    scores = [float(payload.metrics[key]) for key in keys]
    upper = 1.0 if task == "classification" else np.inf
    if not all(np.isfinite(value) and 0.0 <= value <= upper for value in scores):
        raise ProtocolError(f"{SCORE_OF_TASK[task]} scores must be finite and in [0, {upper}], got {scores}")
    if not fused_eval:
        return _agent(payload), scores, None
    outputs = payload.arrays[TEST_OUTPUTS]
    if not (isinstance(outputs, np.ndarray) and outputs.dtype == np.float32 and outputs.ndim == 3):
        raise ProtocolError("test outputs must be a 3-D float32 array L x N_test x K")
    expected = (n_levels, outputs.shape[1] if n_test is None else n_test, n_outputs)
    if outputs.shape != expected or outputs.shape[1] == 0:
        raise ProtocolError(f"test outputs have shape {outputs.shape}, expected {expected}")
    if not np.all(np.isfinite(outputs)):
        raise ProtocolError("test outputs contain NaN or Inf")
    if task == "classification" and (outputs.min() < 0 or np.abs(outputs.sum(2) - 1.0).max() > 1e-4):
        raise ProtocolError("class probabilities must be non-negative and sum to 1 per test row")
    return _agent(payload), scores, outputs
