"""One modality's agent: its own data, its WAE (f_m, g_m), optimiser and kept batch.

Flower-free: the ClientApp (and any other engine) only moves payloads in and out. The whole
state that must outlive a message is ``state_arrays()``, so a fresh process per message can
rebuild the agent exactly (Flower's deployment engine does that).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from otm_fed.losses import RECONSTRUCTION_ERRORS, LossWeights, local_loss, supervised_terms
from otm_fed.metrics import kmeans_scores
from otm_fed.models import WAE, Predictor
from otm_fed.optim import Adam
from otm_fed.plans import project_to_modality
from otm_fed.protocol import AnchorCodes, TrainInstruction
from otm_fed.scenario import ModalityData, agent_stream, batch_rows, view_normalisation
from otm_fed.supervised import noisy_copies, score
from otm_fed.uptake import guard_weight

BATCH_INDICES, BATCH_ROUND, NEIGHBOURS = "batch-indices", "batch-round", "neighbours"


def privatise_codes(codes: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    """Beyond the paper: each code's L2 norm clipped to ``clip``, then Gaussian noise of standard
    deviation ``noise_multiplier * clip`` added per coordinate (the Gaussian mechanism's scale for
    one code). ``clip = 0`` leaves the codes untouched."""
    if not clip:
        return codes
    norms = np.linalg.norm(codes, axis=1, keepdims=True)
    clipped = codes * np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    noise = rng.standard_normal(codes.shape) * (noise_multiplier * clip)
    return (clipped + noise).astype(np.float32)


DIRECTION_NORMALISATIONS = ("l2", "tfidf")  # rows on the unit sphere: cosine reconstruction error


def reconstruction_error(config: Mapping[str, Any], modality: int) -> str:
    """``reconstruction`` = "auto": cosine error for a view whose rows are directions (normalised
    with l2 or tfidf), squared error otherwise; or the configured one for every view."""
    if config["reconstruction"] != "auto":
        return config["reconstruction"]
    return "cosine" if view_normalisation(config, modality) in DIRECTION_NORMALISATIONS else "squared"


def null_reconstruction_error(x: np.ndarray, error: str) -> float:
    """The reconstruction error of predicting every row by the mean row (D for a z-scored view of
    D features): the view's own scale, against which the neighbour term's weight is set, so one
    ``neighbour-weight`` means the same share of the loss on a 6-feature and a 2000-feature view."""
    rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return float(RECONSTRUCTION_ERRORS[error](rows, rows.mean(0, keepdim=True).expand_as(rows)))


def nearest_neighbours(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Row i's k nearest other rows of ``x`` (N x k ids, nearest first) in Euclidean distance,
    computed in chunks of rows so memory stays O(chunk x N)."""
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    k = min(k, len(x) - 1)
    found = []
    for start in range(0, len(x), chunk):
        distances = torch.cdist(data[start:start + chunk], data)
        distances[torch.arange(distances.shape[0]), torch.arange(start, start + distances.shape[0])] = float("inf")
        found.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(found).numpy()


def neighbour_count(config: Mapping[str, Any], n_rows: int, n_clusters: int) -> int:
    """k of the neighbour term: ``neighbours``, or with 0 a rule from the data: half the mean
    cluster size N / (2 C), between 1 and 10 (so a neighbour is most likely in the same cluster)."""
    return config["neighbours"] or int(np.clip(n_rows // (2 * n_clusters), 1, 10))


def initial_weights_seed(config: Mapping[str, Any], modality: int, input_dim: int) -> int:
    """The torch seed of agent m's initial weights: its own stream, or with ``shared-init`` one
    stream per input width, so agents whose views have the same width start from identical
    encoders (one coordinate system for their codes, as a server-broadcast initial model gives)."""
    stream = [config["seed"], 1, input_dim] if config["shared-init"] else [config["seed"], modality]
    return int(np.random.default_rng(stream).integers(2**31))


class ModalityAgent:
    """Agent m's local steps: encode a batch (QUERY), train on the mix (TRAIN), score (EVALUATE).

    With several sites per modality, ``site`` s names which of them this agent is: the sites of a
    modality start from the same weights (``initial_weights_seed`` reads only m), draw their own
    batches (``agent_stream``), and take the modality's average of ``model_weights`` (FedAvg)."""

    def __init__(self, modality: int, data: ModalityData, config: Mapping[str, Any], site: int = 0) -> None:
        self.modality = modality
        self.site = site
        self.data = data
        self.config = config
        error = reconstruction_error(config, modality)
        # The neighbour term is the unsupervised regulariser, weighted on the view's scale; in
        # supervised mode eq. 8 takes its place.
        scale = null_reconstruction_error(data.train, error) if config["task"] == "clustering" else 0.0
        self.k = neighbour_count(config, len(data.train), config["n-clusters"] or data.n_classes)
        self.weights = LossWeights(config["beta"], config["eta"], config["mmd-weight"], config["decode-mix"],
                                   config["neighbour-weight"] * scale, error)
        self.neighbours: np.ndarray | None = None  # k-NN ids of the training rows, found at the first step
        with torch.random.fork_rng():
            torch.manual_seed(initial_weights_seed(config, modality, data.train.shape[1]))
            self.model = WAE(data.train.shape[1], config["latent-dim"], config["hidden-dim"])
            n_outputs = data.n_classes if config["task"] == "classification" else 1
            self.predictor = None if config["task"] == "clustering" else Predictor(
                config["latent-dim"], config["hidden-dim"], n_outputs)
        self.modules: dict[str, torch.nn.Module] = {"model": self.model}
        if self.predictor is not None:
            self.modules["predictor"] = self.predictor  # h_m (eq. 8)
        parameters = itertools.chain.from_iterable(module.parameters() for module in self.modules.values())
        self.optimiser = Adam(parameters, lr=config["lr"])
        self.batch_indices: np.ndarray | None = None
        self.batch_round = -1

    # ------------------------------------------------------------------ batch and codes

    def stream(self, *parts: int) -> list[int]:
        return agent_stream(self.modality, self.site, *parts)

    def sample_batch(self, round_number: int, batch_size: int, seed: int) -> np.ndarray:
        """This round's batch of the agent's own rows, drawn from its own seeded stream."""
        self.batch_indices = batch_rows(len(self.data.train), self.modality, round_number, batch_size, seed,
                                        self.config["aligned"], self.site)
        self.batch_round = round_number
        return self.batch_indices

    def encode(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return self.model.encode(torch.from_numpy(x)).numpy().astype(np.float32)

    def query(self, round_number: int, batch_size: int, seed: int) -> np.ndarray:
        """Z_m = f_m(X_m) on a fresh batch, kept for the TRAIN that follows; clipped and noised
        as configured (``privatise_codes``) since these codes leave the agent."""
        indices = self.sample_batch(round_number, batch_size, seed)
        codes = self.encode(self.data.train[indices])
        return privatise_codes(codes, self.config["latent-clip"], self.config["latent-noise-multiplier"],
                               np.random.default_rng([seed, *self.stream(round_number, 2)]))

    def anchor_codes(self, round_number: int, seed: int) -> AnchorCodes | None:
        """The codes f_m(X_anchors) of the anchors this agent holds, with their positions in the
        shared anchor order (None without anchors or when it holds none), privatised like every
        code that leaves the agent."""
        if self.data.anchors is None or not len(self.data.anchors):
            return None
        codes = self.encode(self.data.anchors)
        return AnchorCodes(self.data.anchor_positions,
                           privatise_codes(codes, self.config["latent-clip"], self.config["latent-noise-multiplier"],
                                           np.random.default_rng([seed, *self.stream(round_number, 5)])))

    # ------------------------------------------------------------------ training

    def own_batch_size(self) -> int:
        """Rows per own step: ``batch-size``, at most N_m."""
        return min(self.config["batch-size"], len(self.data.train))

    def own_steps(self, kept_rows: int | None = None) -> int:
        """Steps on fresh batches of the agent's own data after the kept batch's, each round: enough
        that the run covers ``epochs`` passes over its N_m training rows, ceil((epochs N_m / rounds
        - local-steps x kept rows) / batch-size). The kept batch is ``batch-size`` rows (at most
        N_m) unless the agent is a site sending its share of its modality's batch (``kept_rows``)."""
        kept = self.own_batch_size() if kept_rows is None else kept_rows
        rows_left = self.config["epochs"] * len(self.data.train) - self.config["rounds"] * self.config["local-steps"] * kept
        return max(0, -(-rows_left // (self.config["rounds"] * self.own_batch_size())))

    def train(self, instruction: TrainInstruction) -> dict[str, float]:
        """E = ``local-steps`` steps on the kept batch with eq. 6 (+ server gradient, + MMD, + eq. 8
        with the batch's own targets in supervised mode; without a mix, local-only, plain WAE
        training on a freshly drawn batch), then ``own_steps()`` steps of the local terms alone on
        fresh batches of the agent's own rows. Returns the first step's terms."""
        if instruction.mixed_barycenter is None and self.batch_round != instruction.round:
            self.sample_batch(instruction.round, instruction.batch_size, instruction.seed)
        projected = gradient = None
        weights, uptake = self.weights, {}
        if instruction.mixed_barycenter is not None:
            target = project_to_modality(instruction.mixed_barycenter.astype(np.float64), instruction.plan)
            projected = torch.from_numpy(target.astype(np.float32))
            if self.config["target-guard"]:
                uptake = guard_weight(self.data.train[self.batch_indices], target, self.k)
                weights = replace(weights, beta=weights.beta * uptake["target_weight"])
        if instruction.server_gradient is not None:
            gradient = torch.from_numpy(instruction.server_gradient)
        generator = torch.Generator().manual_seed(
            int(np.random.default_rng([instruction.seed, *self.stream(instruction.round, 1)]).integers(2**31)))
        for module in self.modules.values():
            module.train()
        steps = [self.step(self.batch_indices, generator, projected, gradient, weights)
                 for _ in range(self.config["local-steps"])]
        fresh = np.random.default_rng([instruction.seed, *self.stream(instruction.round, 6)])
        for _ in range(self.own_steps(len(self.batch_indices))):
            self.step(np.sort(fresh.choice(len(self.data.train), self.own_batch_size(), replace=False)), generator)
        return {**steps[0], **uptake}

    def step(self, rows: np.ndarray, generator: torch.Generator, projected: torch.Tensor | None = None,
             gradient: torch.Tensor | None = None, weights: LossWeights | None = None) -> dict[str, float]:
        """One optimiser step of the local loss on training ``rows`` (the mix terms only with the
        kept batch's ``projected`` Z~_m and server ``gradient``, the target's pull weighted as this
        round's uptake decided: ``weights``, else the agent's); returns its terms."""
        weights = weights or self.weights
        x = torch.from_numpy(self.data.train[rows])
        self.optimiser.zero_grad()
        codes, reconstruction = self.model(x)
        decoded_mix = self.model.decode(projected) if projected is not None and weights.decode_mix else None
        terms = local_loss(x, codes, reconstruction, weights, projected, decoded_mix, gradient, generator,
                           self.neighbour_codes(rows, generator))
        if self.predictor is not None:
            targets = torch.from_numpy(self.data.train_targets[rows])
            supervised = supervised_terms(self.predictor, codes, targets, self.config["loss"],
                                          self.config["supervised-weight"], projected)
            terms = {**terms, **supervised, "total": terms["total"] + sum(supervised.values())}
        terms["total"].backward()
        self.optimiser.step()
        return {name: float(value.detach()) for name, value in terms.items()}

    def neighbour_codes(self, rows: np.ndarray, generator: torch.Generator) -> torch.Tensor | None:
        """Codes of one of each row's k nearest neighbours (drawn anew each step), for the
        neighbour term; None without it."""
        if not self.weights.neighbour:
            return None
        if self.neighbours is None:
            self.neighbours = nearest_neighbours(self.data.train, self.k).astype(np.int32)
        candidates = self.neighbours[rows]
        pick = torch.randint(candidates.shape[1], (len(rows),), generator=generator).numpy()
        return self.model.encode(torch.from_numpy(self.data.train[candidates[np.arange(len(rows)), pick]]))

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, n_clusters: int, kmeans_init: int, seed: int) -> tuple[dict[str, float], np.ndarray]:
        """k-means on the agent's own evaluation codes, scored against its local labels."""
        codes = self.encode(self.data.evaluation)
        return kmeans_scores(codes, self.data.labels, n_clusters, kmeans_init, seed), codes

    def predict(self, noise_levels: list[float]) -> tuple[list[float], np.ndarray]:
        """h_m(f_m(X_test + E_r)) for each noise energy ratio r (||E_r||^2 = r ||X_test||^2): the
        score of each (accuracy or MAE, against the local test targets) and the outputs
        (class probabilities or predictions), L x N_test x K, test rows in file order."""
        rng = np.random.default_rng([self.config["seed"], self.modality, self.config["fold"], 3])
        self.predictor.eval()
        outputs = []
        with torch.no_grad():
            for x in noisy_copies(self.data.evaluation, noise_levels, rng):
                raw = self.predictor(torch.from_numpy(self.encode(x)))
                outputs.append((torch.softmax(raw, 1) if self.config["task"] == "classification" else raw).numpy())
        stacked = np.stack(outputs).astype(np.float32)
        scores = [score(level, self.data.evaluation_targets, self.config["task"]) for level in stacked]
        return scores, stacked

    # ------------------------------------------------------------------ state

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything a fresh process needs to continue: weights (WAE, predictor), Adam moments,
        kept batch, and the neighbour term's k-NN ids once found."""
        arrays = {f"{prefix}.{name}": value.detach().numpy().copy()
                  for prefix, module in self.modules.items() for name, value in module.state_dict().items()}
        for index, slots in self.optimiser.state_dict()["state"].items():
            for slot, value in slots.items():
                arrays[f"optim.{index}.{slot}"] = np.asarray(value.detach().numpy() if torch.is_tensor(value) else value)
        if self.batch_indices is not None:
            arrays[BATCH_INDICES] = self.batch_indices.astype(np.int64)
        arrays[BATCH_ROUND] = np.asarray([self.batch_round], dtype=np.int64)
        if self.neighbours is not None:  # O(N^2 D) to find again: a fresh process per message reuses them
            arrays[NEIGHBOURS] = self.neighbours
        return arrays

    def model_weights(self) -> dict[str, np.ndarray]:
        """The WAE's weights (encoder f_m and decoder g_m), what the sites of a modality average."""
        return {name: value.detach().numpy().copy() for name, value in self.model.state_dict().items()}

    def load_model_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Take the modality's averaged WAE weights; Adam's moments stay this site's own. Arrays
        that do not fit this WAE raise ValueError (the site's data width differs, say)."""
        own = self.model.state_dict()
        if set(weights) != set(own) or any(tuple(weights[k].shape) != tuple(own[k].shape) for k in own):
            raise ValueError("the averaged weights do not fit this site's WAE (its data width or the config differ "
                             "from its modality's other sites)")
        self.model.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in weights.items()})

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        for prefix, module in self.modules.items():
            module.load_state_dict({name.removeprefix(f"{prefix}."): torch.from_numpy(np.array(value))
                                    for name, value in arrays.items() if name.startswith(f"{prefix}.")})
        optimiser_state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in arrays.items():
            if name.startswith("optim."):
                _, index, slot = name.split(".")
                optimiser_state.setdefault(int(index), {})[slot] = torch.from_numpy(np.array(value))
        state = self.optimiser.state_dict()
        state["state"] = optimiser_state
        self.optimiser.load_state_dict(state)
        self.batch_indices = np.array(arrays[BATCH_INDICES]) if BATCH_INDICES in arrays else None
        self.batch_round = int(arrays[BATCH_ROUND][0])
        self.neighbours = np.array(arrays[NEIGHBOURS]) if NEIGHBOURS in arrays else None


CHECKPOINT_NAME = re.compile(r"(modality-\d+(?:\.site-\d+)?)\.round-(\d+)\.npz")
CHECKPOINTS_KEPT = 2


def checkpoint_stem(modality: int, site: int = 0) -> str:
    """``modality-m`` (site 0, as a modality held at one site) or ``modality-m.site-s``."""
    return f"modality-{modality}.site-{site}" if site else f"modality-{modality}"


def save_checkpoint(directory: Path, modality: int, round_number: int, arrays: Mapping[str, np.ndarray],
                    site: int = 0) -> Path:
    """Agent (m, s)'s state after ``round_number``: written to a temporary file, then renamed (a
    crash never leaves a half-written checkpoint); only the latest CHECKPOINTS_KEPT are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{checkpoint_stem(modality, site)}.round-{round_number}.npz"
    temporary = directory / f".{path.name}.tmp.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, path)
    for _, old in sorted(_checkpoints(directory, modality, site))[:-CHECKPOINTS_KEPT]:
        old.unlink(missing_ok=True)
    return path


def _checkpoints(directory: Path, modality: int, site: int = 0) -> list[tuple[int, Path]]:
    stem = checkpoint_stem(modality, site)
    found = [(match, path) for path in directory.glob(f"{stem}.round-*.npz")
             if (match := CHECKPOINT_NAME.fullmatch(path.name)) and match.group(1) == stem]
    return [(int(match.group(2)), path) for match, path in found]


def latest_checkpoint(directory: Path, modality: int, before_round: int, site: int = 0) -> dict[str, np.ndarray] | None:
    """Agent (m, s)'s latest saved state from a round before ``before_round``, or None."""
    earlier = [(round_number, path) for round_number, path in _checkpoints(directory, modality, site)
               if round_number < before_round] if directory.is_dir() else []
    if not earlier:
        return None
    with np.load(max(earlier)[1]) as saved:
        return {name: saved[name] for name in saved.files}
