"""OTM as a Flower strategy: QUERY latent codes, mix them on the server, TRAIN, EVALUATE.

The maths lives in ``otm_fed`` (the mixer is a constructor argument); this class only decides
what to send to whom and what to keep. An agent is a (modality, site): with several sites per
modality (``sites``) the server learns each node's site and rows (HELLO), deals each site its
share of the modality's batch, pools a modality's codes before aligning and mixing (the mixer
sees one block per modality), returns each site its own columns of T_m, and averages the WAE
weights of a modality's sites (FedAvg) every ``site-avg-every`` rounds. Subclass and override the
small methods (``query_messages``, ``mix``, ``train_payloads``, ``aggregate_scores``) to change
one step.
``LocalOnlyStrategy`` is the paper's MWAE baseline on the same base: no QUERY, no mixing.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable, Iterator
from operator import attrgetter, itemgetter
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from otm_fed.alignment import alignment_scores, batch_sample_ids
from otm_fed.config import ConfigError, gate_thresholds
from otm_fed.data import MultiViewDataset
from otm_fed.frames import ConfidenceGate, FrameAlignment, align_frames, pooled_anchor_codes
from otm_fed.metrics import kmeans_scores
from otm_fed.mixer import Mixer, MixResult, OTMixer
from otm_fed.protocol import (
    EVALUATE,
    HELLO,
    QUERY,
    SCORE_NAMES,
    TRAIN,
    Agent,
    AnchorCodes,
    Hello,
    Payload,
    ProtocolError,
    TrainReply,
    evaluate_request,
    hello_request,
    predict_request,
    query_request,
    read_codes_reply,
    read_evaluate_reply,
    read_hello_reply,
    read_predictions_reply,
    read_train_reply,
    train_request,
)
from otm_fed.results import (EVAL_CODES_FILE, GATE_CLOSED, NO_MIXING_BY_DESIGN, NO_PARTNER, SITE_AVERAGE_FILE, TEACHER,
                             RunRecorder, read_rounds)
from otm_fed.sites import SiteError, average_weights, batch_shares, parse_sites
from otm_fed.supervised import SCORE_OF_TASK, late_fusion, parse_noise_levels, score
from otm_fed.uptake import cluster_strength
from otm_fed_flwr.records import from_records, payload_bytes, to_records
from server.replies import send_and_receive

log = logging.getLogger("otm_fed.server")
Reply = TypeVar("Reply")

NODE_WAIT_SECONDS = 120.0


def mixer_from_config(config: Mapping[str, Any]) -> OTMixer:
    return OTMixer(alpha=config["alpha"], barycenter_size=config["barycenter-size"] or None,
                   mask_mode=config["mask"], max_outer=config["max-outer"])


def received_mix(row: Mapping[str, Any]) -> list[int]:
    """The modalities whose TRAIN carried the mix in a round's metrics row (rows written before
    ``received`` was logged: every modality in the mix)."""
    mixer = row.get("mixer", {})
    return mixer.get("received", mixer.get("modalities", []))


class OTMStrategy(Strategy):
    """The OT-based latent mixer over M modality agents, one round at a time.

    Fault handling: every error reply, refused payload and missing reply (``round-timeout``) is
    logged and recorded with its node and stage in the round's ``failures``; a round mixes and
    trains the modalities that answered when at least ``min-modalities`` did, and a node that
    failed is asked again on the next round. With ``piggyback`` the TRAIN reply also carries the
    next round's codes and, where due, the evaluation, so a round is one exchange."""

    name = "otm"
    mixes = True
    """False for a strategy in which every modality trains alone by design: no mixing to report."""

    def __init__(self, config: Mapping[str, Any], n_modalities: int, n_clusters: int,
                 mixer: Mixer | None = None, recorder: RunRecorder | None = None,
                 fused_labels: np.ndarray | None = None, samples: MultiViewDataset | None = None,
                 progress: Callable[[str], None] = print) -> None:
        self.config = dict(config)
        self.n_modalities = n_modalities
        self.n_clusters = n_clusters
        self.mixer = mixer if mixer is not None else mixer_from_config(config)
        self.recorder = recorder
        self.fused_labels = fused_labels
        self.samples = samples  # simulation only: the data with every sample's class, for the alignment diagnostic
        self.progress = progress
        self.num_rounds = self.config["rounds"]
        try:
            self.site_counts = parse_sites(self.config["sites"], n_modalities)  # sites per modality
        except SiteError as error:
            raise ConfigError(str(error)) from None
        self.several_sites = max(self.site_counts) > 1
        self.node_ids: list[int] = []
        self.node_of: dict[Agent, int] = {}  # (modality, site) -> node id, learnt from replies
        self.hellos: dict[int, Hello] = {}  # node id -> who it is and what it holds (several sites per modality)
        self.site_average: dict[int, dict[str, np.ndarray]] = {}  # modality -> its sites' averaged WAE, to send
        self.codes: dict[Agent, np.ndarray] = {}
        self.next_codes: dict[Agent, np.ndarray] = {}  # codes piggy-backed for the next round
        self.anchor_codes: dict[Agent, AnchorCodes] = {}  # the codes of the anchors it holds (``anchors`` > 0)
        self.next_anchor_codes: dict[Agent, AnchorCodes] = {}
        self.pooled: dict[int, np.ndarray] = {}  # modality -> its sites' codes stacked in site order: Z_m
        self.pool_columns: dict[Agent, slice] = {}  # each site's rows of its modality's Z_m (columns of T_m)
        self.sent_to: dict[str, int] = {}  # message id -> node id, of the exchange in flight
        self.trained_as: dict[int, Agent] = {}  # node id -> the agent it was sent TRAIN for
        self.failure_counts: dict[int, int] = {}
        self.mix_result: MixResult | None = None
        self.alignment: FrameAlignment | None = None
        self.mixed_modalities: list[int] = []  # the modalities in this round's mix, in order
        self.receiving: list[int] = []  # the mixed modalities whose TRAIN carries the mix back (target-flow)
        self.flow_readings: dict[int, tuple[float, float]] = {}  # m -> (s(own codes), s(others' codes)) this round
        self.flow_history: dict[int, list[float]] = {}  # m -> its last gate-window readings of s(others) - s(own)
        self.mixed_codes: dict[int, np.ndarray] = {}  # their codes as mixed: phi_m(Z_m), or Z_m without alignment
        self.rotations: dict[int, np.ndarray] = {}  # modality -> Q_m of its frame map (align = procrustes)
        self.gate = ConfidenceGate(gate_thresholds(self.config), self.config["gate-window"])
        self.first_mixed: dict[int, int] = {}  # modality -> the first round its TRAIN message carried a mix
        self.row: dict[str, Any] = {}
        self.final_scores: dict[str, Any] = {}
        self.eval_codes: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ small overridable steps

    def round_seed(self, server_round: int) -> int:
        return int(np.random.default_rng([self.config["seed"], server_round]).integers(2**31))

    def query_messages(self, server_round: int, grid: Grid, node_ids: Iterable[int]) -> list[Message]:
        return [Message(to_records(query_request(server_round, self.node_batch_size(node), self.round_seed(server_round))),
                        dst_node_id=node, message_type=QUERY) for node in node_ids]

    def node_batch_size(self, node: int) -> int:
        """Rows of the batch a node encodes: ``batch-size``, or a site's share of it (``batch_shares``:
        proportional to its rows among its modality's sites that said HELLO)."""
        if node not in self.hellos:
            return self.config["batch-size"]
        shares = batch_shares({hello.agent: hello.rows for hello in self.hellos.values()}, self.config["batch-size"])
        return shares[self.hellos[node].agent]

    def agent_label(self, agent: Agent) -> str:
        """How results name an agent: ``m`` for a modality held at one site, ``m.s`` otherwise."""
        modality, site = agent
        return str(modality) if self.site_counts[modality] == 1 else f"{modality}.{site}"

    def pool(self, codes: Mapping[Agent, np.ndarray]) -> dict[int, np.ndarray]:
        """Z_m per modality: its sites' codes stacked in site order (``pool_columns`` keeps each
        site's rows); a modality held at one site is its codes as sent."""
        self.pool_columns, pooled = {}, {}
        for modality in sorted({m for m, _ in codes}):
            sites = sorted(agent for agent in codes if agent[0] == modality)
            start = 0
            for agent in sites:
                self.pool_columns[agent] = slice(start, start + len(codes[agent]))
                start += len(codes[agent])
            pooled[modality] = codes[sites[0]] if len(sites) == 1 else np.concatenate([codes[a] for a in sites])
        return pooled

    def pooled_anchors(self, modality: int) -> np.ndarray:
        """The anchors' codes of a modality, K x d in anchor order, from its sites whose codes are
        this round's (an anchor two sites claim from the lower site; NaN rows for anchors none of
        them holds)."""
        parts = [(self.anchor_codes[agent].positions, self.anchor_codes[agent].codes.astype(np.float64))
                 for agent in sorted(self.anchor_codes) if agent[0] == modality and agent in self.codes]
        return pooled_anchor_codes(parts, self.config["anchors"], self.config["latent-dim"])

    def site_plan(self, agent: Agent, plan: np.ndarray) -> np.ndarray:
        """A site's own columns of T_m, scaled by N_m / N_s so that each column carries 1/N_s
        (eq. 4 divides by the columns' mass, so its target rows are unchanged); the whole T_m for
        a modality held at one site."""
        columns = self.pool_columns[agent]
        block = plan[:, columns]
        return block if block.shape[1] == plan.shape[1] else block * (plan.shape[1] / block.shape[1])

    def averaging_due(self, server_round: int) -> bool:
        every = self.config["site-avg-every"]
        return self.several_sites and every > 0 and server_round % every == 0

    def site_weights(self, server_round: int, agent: Agent) -> dict[str, Any]:
        """The FedAvg part of a site's TRAIN: its modality's pending average, and whether to send
        its weights back this round (only for a modality held at several sites)."""
        if self.site_counts[agent[0]] == 1:
            return {}
        return {"weights": self.site_average.get(agent[0]), "send_weights": self.averaging_due(server_round)}

    def mix(self, server_round: int, codes: Mapping[int, np.ndarray]) -> MixResult:
        """The stochastic FGW barycenter of the codes received this round, modalities in order."""
        return self.mixer([codes[m] for m in sorted(codes)], np.random.default_rng(self.round_seed(server_round)))

    def align(self, server_round: int, codes: Mapping[int, np.ndarray]) -> FrameAlignment | None:
        """Each modality's map into the common frame (``otm_fed.frames``), warm-started from last
        round's rotations, with fresh GW starts for a new modality and every ``align-refresh``
        rounds, or fitted on the anchors' codes with ``anchors``; None with ``align = none`` (the
        paper: codes mixed as they come)."""
        if self.config["align"] == "none":
            return None
        rng = np.random.default_rng([self.config["seed"], server_round, 3])
        search = server_round % self.config["align-refresh"] == 0
        anchors = {m: self.pooled_anchors(m) for m in codes} if self.config["anchors"] else None
        alignment = align_frames({m: codes[m].astype(np.float64) for m in codes}, self.rotations,
                                 self.config["align-starts"], rng, search, anchors)
        self.rotations.update({m: frame.rotation for m, frame in alignment.frames.items()})
        return alignment

    def gated_modalities(self, alignment: FrameAlignment | None, modalities: Iterable[int]) -> list[int]:
        """The modalities that mix this round (all without alignment or gate): those the
        ``ConfidenceGate`` has opened, i.e. whose mean readings over ``gate-window`` rounds before
        they ever mixed reached their thresholds (``gate_thresholds``); the others train alone.
        Fewer than two leave no one to mix with."""
        modalities = sorted(modalities)
        if alignment is None or not self.gate.thresholds:
            return modalities if len(modalities) >= 2 else []
        return self.gate.admit({m: alignment.readings[m] for m in modalities if m != alignment.reference},
                               alignment.reference)

    def receiving_modalities(self, server_round: int) -> list[int]:
        """The mixed modalities that take the mix back this round: all, or with ``target-flow``
        those whose codes the other modalities could teach: over the last ``gate-window`` rounds
        (a full window, as the gate decides), the others' codes carried onto m's rows through the
        plans, N_m T_m^T mean_{o != m} N_B T_o phi_o(Z_o), were on average better clustered than
        m's own phi_m(Z_m) (``otm_fed.uptake.cluster_strength``, label-free; ``flow_readings``).
        The others still mix m's codes: a modality that gives without taking is a teacher."""
        if not self.config["target-flow"] or self.mix_result is None:
            self.flow_readings = {}
            return list(self.mixed_modalities)
        plans, codes = self.mix_result.transport_plans, [self.mixed_codes[m] for m in self.mixed_modalities]
        carried = [len(plan) * (plan @ z) for plan, z in zip(plans, codes)]  # N_B T_o phi_o(Z_o)
        seed = self.round_seed(server_round)
        self.flow_readings = {}
        for index, modality in enumerate(self.mixed_modalities):
            others = np.mean([rows for other, rows in enumerate(carried) if other != index], axis=0)
            plan = plans[index]
            onto_own = plan.shape[1] * (plan.T @ others)
            self.flow_readings[modality] = (cluster_strength(codes[index], self.n_clusters, seed),
                                            cluster_strength(onto_own, self.n_clusters, seed))
        window = self.config["gate-window"]
        for modality, (own, others) in self.flow_readings.items():
            self.flow_history[modality] = (self.flow_history.get(modality, []) + [others - own])[-window:]
        return [m for m in self.mixed_modalities
                if len(self.flow_history[m]) == window and np.mean(self.flow_history[m]) > 0]

    def server_gradients(self, codes: Mapping[int, np.ndarray], result: MixResult) -> list[np.ndarray] | None:
        """G_m = d GW(K(Z~_B), I_C) / d Z_m (eq. 7) for the mixed modalities (``codes`` as mixed),
        or None when the regulariser is off."""
        if not self.config["eta"]:
            return None
        # Imported here: eq. 7 differentiates with torch, which a server without it never loads.
        from otm_fed.clustering import clustering_loss, modality_gradients

        return modality_gradients([codes[m] for m in sorted(codes)], result.transport_plans, result.masks,
                                  lambda mixed: clustering_loss(mixed, self.n_clusters))

    def next_seed(self, server_round: int) -> int | None:
        """The seed of the next round's batch when its codes ride on this TRAIN reply."""
        return self.round_seed(server_round + 1) if self.config["piggyback"] and server_round < self.num_rounds else None

    def evaluation_due(self, server_round: int) -> bool:
        return server_round % self.config["eval-every"] == 0 or server_round == self.num_rounds

    def evaluate_payload(self, server_round: int) -> Payload:
        if self.config["task"] == "clustering":
            return evaluate_request(server_round, self.n_clusters, self.config["kmeans-init"], self.config["fused-eval"])
        return predict_request(server_round, parse_noise_levels(self.config["noise-levels"]), self.config["fused-eval"])

    def piggyback_evaluation(self, server_round: int) -> Payload | None:
        """Clustering evaluation rides on the TRAIN reply when due; supervised evaluation (per noise
        level, late fusion) keeps its own EVALUATE exchange."""
        piggybacked = self.config["piggyback"] and self.config["task"] == "clustering"
        return self.evaluate_payload(server_round) if piggybacked and self.evaluation_due(server_round) else None

    def train_payloads(self, server_round: int) -> dict[Agent, Payload]:
        """TRAIN for every modality that sent codes: to each one that takes the mix back
        (``receiving_modalities``) Z~_B in its own frame, its own plan and its gradient; to the
        others (gated, teachers, or all when no mix was made) no mix: they train alone."""
        gradients = self.server_gradients(self.mixed_codes, self.mix_result) if self.mix_result is not None else None
        payloads = {}
        for agent in sorted(self.codes):
            modality, barycenter, plan, gradient = agent[0], None, None, None
            if modality in self.receiving:
                index = self.mixed_modalities.index(modality)
                barycenter = self.own_frame(modality, self.mix_result.mixed_barycenter)
                plan = self.site_plan(agent, self.mix_result.transport_plans[index])
                if gradients is not None:  # d/dZ_m = d/dphi_m(Z_m) Q_m^T / s_m (c_m, s_m held fixed)
                    gradient = self.own_frame(modality, gradients[index][self.pool_columns[agent]], linear=True)
            payloads[agent] = train_request(
                server_round, self.node_batch_size(self.node_of[agent]), self.round_seed(server_round), barycenter, plan,
                gradient, self.next_seed(server_round), self.piggyback_evaluation(server_round),
                **self.site_weights(server_round, agent))
        return payloads

    def common_codes(self, modality: int) -> np.ndarray:
        """Z_m as mixed: phi_m(Z_m) in the common frame, or as received without alignment."""
        codes = self.pooled[modality]
        return codes if self.alignment is None else self.alignment.frames[modality].to_common(codes.astype(np.float64))

    def own_frame(self, modality: int, common: np.ndarray, linear: bool = False) -> np.ndarray:
        """phi_m^{-1} of rows in the common frame (``linear``: of a gradient, which takes Q_m^T / s_m)."""
        if self.alignment is None:
            return common
        frame = self.alignment.frames[modality]
        return common @ frame.rotation.T / frame.scale if linear else frame.from_common(common)

    def alignment_diagnostic(self, server_round: int) -> dict[str, float] | None:
        """Simulation only (with ``fused-eval``): how much plan mass lands on true counterparts,
        from batches rebuilt with the agents' own definitions (``otm_fed.alignment``)."""
        if self.samples is None or self.mix_result is None:
            return None
        ids = batch_sample_ids(self.config, self.samples, self.mixed_modalities, server_round,
                               self.round_seed(server_round))
        return alignment_scores(self.mix_result.transport_plans, ids, self.samples.labels)

    def modality_scores(self, scores: Mapping[Agent, Mapping[str, float]]) -> dict[int, dict[str, float]]:
        """Each modality's scores: its site's, or the mean of its sites' weighted by their rows."""
        per_modality = {}
        for modality in sorted({m for m, _ in scores}):
            sites = sorted(agent for agent in scores if agent[0] == modality)
            rows = np.array([self.hellos[self.node_of[a]].rows if self.node_of.get(a) in self.hellos else 1
                             for a in sites], dtype=np.float64)
            per_modality[modality] = {name: float(np.dot(rows, [scores[a][name] for a in sites]) / rows.sum())
                                      for name in scores[sites[0]]}
        return per_modality

    def aggregate_scores(self, scores: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
        """Mean over modalities of each score, per-modality values kept."""
        ordered = [scores[m] for m in sorted(scores)]
        aggregated: dict[str, Any] = {name: float(np.mean([s[name] for s in ordered])) for name in SCORE_NAMES}
        for name in SCORE_NAMES:
            aggregated[f"{name}_per_modality"] = [float(s[name]) for s in ordered]
        return aggregated

    # ------------------------------------------------------------------ Flower's Strategy interface

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        start = time.perf_counter()
        self.alignment = self.align(server_round, self.pooled)
        self.mixed_modalities = self.gated_modalities(self.alignment, self.pooled)
        self.mixed_codes = {m: self.common_codes(m) for m in self.mixed_modalities}
        self.mix_result = self.mix(server_round, self.mixed_codes) if self.mixed_codes else None
        self.receiving = self.receiving_modalities(server_round)
        payloads = self.train_payloads(server_round)
        self.row["seconds"]["mix"] = time.perf_counter() - start
        self.count_bytes("bytes_down", {agent: payload_bytes(payload) for agent, payload in payloads.items()})
        self.site_average = {}  # delivered
        self.trained_as = {self.node_of[agent]: agent for agent in payloads}
        return [Message(to_records(payload), dst_node_id=self.node_of[agent], message_type=TRAIN)
                for agent, payload in payloads.items()]

    def count_bytes(self, direction: str, sizes: Mapping[Agent, int]) -> None:
        for agent, size in sizes.items():
            label = self.agent_label(agent)
            self.row[direction][label] = self.row[direction].get(label, 0) + size

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Loss terms per agent; piggy-backed next codes and scores where they were asked for; the
        weights of a modality's sites averaged (FedAvg, weighted by rows) to go out with the next TRAIN."""
        losses: dict[Agent, dict[str, float]] = {}
        scores: dict[Agent, dict[str, float]] = {}
        eval_codes: dict[Agent, np.ndarray] = {}
        weights: dict[Agent, dict[str, np.ndarray]] = {}
        evaluation = self.piggyback_evaluation(server_round) is not None
        piggybacked = self.next_seed(server_round) is not None
        averaged = {m for m, count in enumerate(self.site_counts) if count > 1} if self.averaging_due(server_round) else set()

        def read(payload: Payload) -> TrainReply:
            return read_train_reply(payload, self.config["latent-dim"], self.config["batch-size"], piggybacked,
                                    evaluation, self.config["fused-eval"], self.config["anchors"], averaged)

        for reply in self.accepted_replies(replies, TRAIN, read, losses, attrgetter("agent"), self.trained_as):
            losses[reply.agent] = reply.losses
            if reply.next_codes is not None:
                self.next_codes[reply.agent] = reply.next_codes
            if reply.next_anchor_codes is not None:
                self.next_anchor_codes[reply.agent] = reply.next_anchor_codes
            if reply.scores is not None:
                scores[reply.agent] = reply.scores
            if reply.eval_codes is not None:
                eval_codes[reply.agent] = reply.eval_codes
            if reply.weights is not None:
                weights[reply.agent] = reply.weights
        self.row["losses"] = {self.agent_label(agent): losses[agent] for agent in sorted(losses)}
        if weights:
            self.average_sites(weights)
        if scores:
            self.record_scores(scores, eval_codes)
        totals = [metrics["total"] for metrics in losses.values() if "total" in metrics]
        return None, MetricRecord({"total": float(np.mean(totals))} if totals else {})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        payload = self.evaluate_payload(server_round)
        return [Message(to_records(payload), dst_node_id=node, message_type=EVALUATE)
                for node in sorted(set(self.node_of.values()))]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if self.config["task"] != "clustering":
            return self.aggregate_predictions(replies)
        scores: dict[Agent, dict[str, float]] = {}
        eval_codes: dict[Agent, np.ndarray] = {}

        def read(payload: Payload) -> tuple[Agent, dict[str, float], np.ndarray | None]:
            return read_evaluate_reply(payload, self.config["latent-dim"], self.config["fused-eval"])

        for agent, agent_scores, codes in self.accepted_replies(replies, EVALUATE, read, scores):
            scores[agent] = agent_scores
            if codes is not None:
                eval_codes[agent] = codes
        if not scores:
            return None
        aggregated = self.record_scores(scores, eval_codes)
        return MetricRecord({k: v for k, v in aggregated.items() if isinstance(v, float)})

    def record_scores(self, scores: Mapping[Agent, Mapping[str, float]],
                      eval_codes: Mapping[Agent, np.ndarray]) -> dict[str, Any]:
        """The round's evaluation: mean scores over modalities (a modality's sites weighted by their
        rows), each site's scores with several sites per modality, and the fused score when every
        evaluated agent sent codes."""
        aggregated = self.aggregate_scores(self.modality_scores(scores))
        if self.several_sites:
            for name in SCORE_NAMES:
                aggregated[f"{name}_per_site"] = {self.agent_label(a): float(scores[a][name]) for a in sorted(scores)}
        if self.fused_labels is not None and len(eval_codes) == len(scores):
            fused = np.concatenate([eval_codes[m] for m in sorted(eval_codes)], axis=1)
            fused_scores = kmeans_scores(fused, self.fused_labels, self.n_clusters, self.config["kmeans-init"],
                                         self.config["seed"])
            aggregated.update({f"fused_{name}": value for name, value in fused_scores.items()})
            self.eval_codes = eval_codes
        self.row["eval"] = aggregated
        return aggregated

    def aggregate_predictions(self, replies: Iterable[Message]) -> MetricRecord | None:
        """Supervised: each modality's score (accuracy or MAE) on its own test fold per noise
        level (level 0 is clean); with fused-eval (simulation only) late fusion, the average of
        the modalities' outputs, clean and with one modality's inputs noisy at a time."""
        task, levels = self.config["task"], parse_noise_levels(self.config["noise-levels"])
        name = SCORE_OF_TASK[task]
        n_test = None if self.fused_labels is None else len(self.fused_labels)
        scores: dict[Agent, list[float]] = {}  # one site per modality (``validate_sites``)
        outputs: dict[Agent, np.ndarray] = {}

        def read(payload: Payload) -> tuple[Agent, list[float], np.ndarray | None]:
            return read_predictions_reply(payload, task, len(levels), self.n_clusters if task == "classification" else 1,
                                          self.config["fused-eval"], n_test)

        for agent, agent_scores, agent_outputs in self.accepted_replies(replies, EVALUATE, read, scores):
            scores[agent] = agent_scores
            if agent_outputs is not None:
                outputs[agent] = agent_outputs
        if not scores:
            return None
        ordered = sorted(scores)
        aggregated: dict[str, Any] = {name: float(np.mean([scores[m][0] for m in ordered])),
                                      f"{name}_per_modality": [scores[m][0] for m in ordered],
                                      "noise_levels": levels,
                                      f"{name}_noise_per_modality": [scores[m] for m in ordered]}
        if self.fused_labels is not None and len(outputs) == len(scores):
            def fused(noisy: int | None, level: int) -> float:
                return score(late_fusion([outputs[m][level if m == noisy else 0] for m in ordered]),
                             self.fused_labels, task)
            aggregated[f"late_fusion_{name}"] = fused(None, 0)
            aggregated[f"late_fusion_{name}_noise"] = [[fused(m, level) for level in range(len(levels))]
                                                       for m in ordered]
        self.row["eval"] = aggregated
        return MetricRecord({k: v for k, v in aggregated.items() if isinstance(v, float)})

    def summary(self) -> None:
        log.info("strategy %s: %d modalities, mixer %s", self.name, self.n_modalities, self.mixer)

    # ------------------------------------------------------------------ exchanges and failures

    def exchange(self, grid: Grid, messages: Iterable[Message], kind: str) -> list[Message]:
        """Send and wait up to ``round-timeout``, pulling replies every 0.1 s (``server.replies``:
        Flower's own ``send_and_receive`` pulls every 3 s); a node whose reply did not come is recorded."""
        messages = list(messages)
        replies = send_and_receive(grid, messages, self.config["round-timeout"])
        self.sent_to = {message.metadata.message_id: message.metadata.dst_node_id for message in messages}
        answered = {self.reply_node(reply) for reply in replies}
        for node in sorted(set(self.sent_to.values()) - answered):
            self.record_failure(node, kind, f"no reply within round-timeout ({self.config['round-timeout']:g} s)")
        return replies

    def reply_node(self, reply: Message) -> int:
        """The node a reply answers for (an error from the SuperLink itself names the message)."""
        return self.sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def valid_replies(self, replies: Iterable[Message], kind: str) -> list[Message]:
        """Replies without errors; error replies are logged and recorded for the round."""
        valid = []
        for reply in replies:
            if reply.has_error():
                self.record_failure(self.reply_node(reply), kind, f"error {reply.error.code}: {reply.error.reason}")
            else:
                valid.append(reply)
        return valid

    def reply_payloads(self, replies: Iterable[Message], kind: str) -> list[tuple[int, Payload]]:
        """(node, Payload) of each valid reply; a reply with foreign records is refused."""
        payloads = []
        for reply in self.valid_replies(replies, kind):
            try:
                payloads.append((self.reply_node(reply), from_records(reply.content)))
            except ProtocolError as error:
                self.record_failure(self.reply_node(reply), kind, f"refused: {error}")
        return payloads

    def accepted_replies(self, replies: Iterable[Message], kind: str, read: Callable[[Payload], Reply],
                         taken: Mapping[Agent, Any], agent_of: Callable[[Reply], Agent] = itemgetter(0),
                         expected: Mapping[int, Agent] | None = None) -> Iterator[Reply]:
        """``read(payload)`` of each valid reply whose stated (modality, site) ``claim_agent``
        accepts (``taken``: the agents answered so far, which the caller fills as it goes;
        ``expected``: node -> the agent it was asked for); every other reply is recorded as refused."""
        for node, payload in self.reply_payloads(replies, kind):
            try:
                reply = read(payload)
                self.claim_agent(agent_of(reply), node, taken, (expected or {}).get(node))
            except ProtocolError as error:
                self.record_failure(node, kind, f"refused: {error}")
                continue
            yield reply

    def claim_agent(self, agent: Agent, node: int, taken: Mapping[Agent, Any], expected: Agent | None = None) -> None:
        """A reply's stated (modality, site) must exist in the topology, be the one the node was
        asked as (or said HELLO as), and not be claimed by another node in the same exchange; the
        node then serves that agent."""
        modality, site = agent
        if modality >= self.n_modalities:
            raise ProtocolError(f"modality {modality} does not exist ({self.n_modalities} modalities)")
        if site >= self.site_counts[modality]:
            raise ProtocolError(f"site {site} of modality {modality} does not exist "
                                f"({self.site_counts[modality]} sites)")
        expected = expected if expected is not None else self.hellos[node].agent if node in self.hellos else None
        if expected is not None and agent != expected:
            raise ProtocolError(f"states {self.describe(agent)}, was asked for {self.describe(expected)}")
        if agent in taken:
            raise ProtocolError(f"{self.describe(agent)} already answered by node {self.node_of.get(agent)}")
        self.node_of[agent] = node

    def describe(self, agent: Agent) -> str:
        modality, site = agent
        return f"modality {modality}" if self.site_counts[modality] == 1 else f"modality {modality} site {site}"

    def record_failure(self, node: int, kind: str, reason: str) -> None:
        log.warning("round %s: %s from node %s failed: %s", self.row.get("round"), kind, node, reason)
        self.row["failures"].append({"node": node, "stage": kind, "reason": reason})
        self.failure_counts[node] = self.failure_counts.get(node, 0) + 1

    def wait_for_nodes(self, grid: Grid) -> list[int]:
        """Every site's node (one per modality unless ``sites`` says more), or at least
        ``min-modalities`` of them after NODE_WAIT_SECONDS."""
        expected = sum(self.site_counts)
        deadline = time.monotonic() + NODE_WAIT_SECONDS
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if len(node_ids) < min(self.config["min-modalities"], expected):
            raise RuntimeError(f"only {len(node_ids)} of {expected} nodes connected within {NODE_WAIT_SECONDS:.0f} s")
        return node_ids

    def greet(self, grid: Grid, node_ids: Iterable[int], first: bool = False) -> None:
        """HELLO to the nodes not met yet (several sites per modality only): each says which
        (modality, site) it is, its rows and its data's width; a site back under a new node id
        replaces its old node. A site whose width differs from its modality's other sites cannot
        share their WAE: refused, and before the first round (``first``) the run stops with that
        one line."""
        node_ids = list(node_ids)
        new = [node for node in node_ids if node not in self.hellos]
        if not self.several_sites or not new:
            return
        messages = [Message(to_records(hello_request()), dst_node_id=node, message_type=HELLO) for node in new]
        claimed = {hello.agent: hello for node, hello in self.hellos.items() if node in node_ids}
        fresh: list[tuple[int, Hello]] = []
        for hello in self.accepted_replies(self.exchange(grid, messages, HELLO), HELLO, read_hello_reply, claimed,
                                           attrgetter("agent")):
            claimed[hello.agent] = hello
            fresh.append((self.node_of[hello.agent], hello))
        for node, hello in sorted(fresh, key=lambda item: item[1].agent):
            self.hellos = {other: known for other, known in self.hellos.items() if known.agent != hello.agent}
            widths = {other.width for other in self.hellos.values() if other.agent[0] == hello.agent[0]}
            if widths and hello.width not in widths:
                reason = (f"{self.describe(hello.agent)} holds data of width {hello.width}, its modality's other "
                          f"sites {widths.pop()}: sites of a modality share one WAE")
                del self.node_of[hello.agent]
                if first:
                    raise ConfigError(reason)
                self.record_failure(node, HELLO, f"refused: {reason}")
                continue
            self.hellos[node] = hello

    def average_sites(self, weights: Mapping[Agent, Mapping[str, np.ndarray]]) -> None:
        """FedAvg within each modality: the WAE weights its sites sent, weighted by their rows
        (``otm_fed.sites.average_weights``), kept to go out with the next TRAIN to that
        modality's sites only. A site that did not answer is left out of the round's average."""
        self.row["site_average"] = {}
        for modality in sorted({m for m, _ in weights}):
            sites = sorted(agent for agent in weights if agent[0] == modality)
            try:
                self.site_average[modality] = average_weights([dict(weights[a]) for a in sites],
                                                              [self.hellos[self.node_of[a]].rows for a in sites])
            except SiteError as error:
                log.warning("round %s: modality %d not averaged: %s", self.row.get("round"), modality, error)
                continue
            self.row["site_average"][str(modality)] = [self.agent_label(a) for a in sites]

    # ------------------------------------------------------------------ the round loop

    def collect_codes(self, server_round: int, grid: Grid, node_ids: list[int]) -> None:
        """QUERY the nodes whose codes are not held yet; keep each valid reply's codes under the
        modality it states."""
        def read(payload: Payload) -> tuple[Agent, np.ndarray, AnchorCodes | None]:
            return read_codes_reply(payload, self.config["latent-dim"], self.config["batch-size"],
                                    self.config["anchors"])

        replies = self.exchange(grid, self.query_messages(server_round, grid, node_ids), QUERY)
        for agent, codes, anchor_codes in self.accepted_replies(replies, QUERY, read, self.codes):
            self.codes[agent] = codes
            if anchor_codes is not None:
                self.anchor_codes[agent] = anchor_codes

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int | None = None,
              timeout: float | None = None, **_: Any) -> dict[str, Any]:
        """Run every round; returns the final round's aggregated scores."""
        self.num_rounds = num_rounds or self.config["rounds"]
        first_round, earlier_seconds = self.restore()
        self.node_ids = self.wait_for_nodes(grid)
        started = time.perf_counter() - earlier_seconds
        for server_round in range(first_round, self.num_rounds + 1):
            round_start = time.perf_counter()
            self.row = {"round": server_round, "seconds": {}, "bytes_up": {}, "bytes_down": {},
                        "failures": []}
            self.node_ids = sorted(grid.get_node_ids())
            for agent, node in sorted(self.node_of.items()):
                if node not in self.node_ids:
                    self.record_failure(node, "connect", f"the node of {self.describe(agent)} is no longer connected")
            self.greet(grid, self.node_ids, first=server_round == first_round)
            self.run_round(server_round, grid)
            if self.evaluation_due(server_round) and "eval" not in self.row:
                eval_start = time.perf_counter()
                messages = self.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(), grid)
                self.aggregate_evaluate(server_round, self.exchange(grid, messages, EVALUATE))
                self.row["seconds"]["evaluate"] = time.perf_counter() - eval_start
            self.row["seconds"]["total"] = time.perf_counter() - round_start
            self.finish_round(server_round, self.num_rounds)
            if self.recorder is not None:
                if self.site_average:  # the next round's FedAvg weights, written before the state that names them
                    self.recorder.write_arrays(SITE_AVERAGE_FILE, **{f"{m}/{name}": value for m, average in
                                                                     self.site_average.items() for name, value in average.items()})
                self.recorder.save_checkpoint(self.checkpoint(server_round, time.perf_counter() - started))
        self.final_scores = self.row.get("eval", {})
        if self.recorder is not None:
            self.recorder.write_summary(self.summary_record(self.num_rounds, time.perf_counter() - started))
            if self.eval_codes:  # simulation only: the final fused codes, for plots
                self.recorder.write_arrays(EVAL_CODES_FILE, labels=self.fused_labels,
                                           **{f"codes-{m}": codes for (m, _), codes in self.eval_codes.items()})
        return self.final_scores

    def checkpoint(self, server_round: int, wall_seconds: float) -> dict[str, Any]:
        """What the next round needs besides the agents' own checkpoints. The server's randomness
        is a pure function of (seed, round) (``round_seed``), so the round is its RNG state;
        piggy-backed codes are not kept: a resumed round QUERYs them again, bit for bit. The frame
        rotations Q_m are kept (as JSON floats, which round-trip exactly), the gate's state, the
        flow's window of readings, the round each modality first mixed, and which modalities have
        a FedAvg average waiting for their sites (its arrays: ``SITE_AVERAGE_FILE``)."""
        return {"round": server_round, "seed": self.config["seed"], "wall_seconds": wall_seconds,
                "failure_counts": {str(node): count for node, count in self.failure_counts.items()},
                "rotations": {str(m): rotation.tolist() for m, rotation in sorted(self.rotations.items())},
                "gate": self.gate.state(),
                "flow": {str(m): values for m, values in sorted(self.flow_history.items())},
                "first_mixed": {str(m): r for m, r in sorted(self.first_mixed.items())},
                "site_average": sorted(self.site_average)}

    def restore(self) -> tuple[int, float]:
        """(first round, seconds already spent): after the checkpoint's round with ``resume``."""
        state = self.recorder.resume() if self.config["resume"] and self.recorder is not None else None
        if state is None:
            return 1, 0.0
        if state["seed"] != self.config["seed"]:
            raise ValueError(f"cannot resume: the checkpoint was made with seed {state['seed']}, "
                             f"the config has seed {self.config['seed']}")
        self.failure_counts = {int(node): count for node, count in state["failure_counts"].items()}
        self.rotations = {int(m): np.array(rotation) for m, rotation in state.get("rotations", {}).items()}
        self.gate.restore(state.get("gate", {}))
        self.flow_history = {int(m): [float(v) for v in values] for m, values in state.get("flow", {}).items()}
        self.first_mixed = ({int(m): r for m, r in state["first_mixed"].items()} if "first_mixed" in state
                            else self.first_mixed_from_rows())
        if state.get("site_average"):
            with np.load(self.recorder.run_dir / SITE_AVERAGE_FILE) as saved:
                for key in saved.files:
                    modality, name = key.split("/", 1)
                    self.site_average.setdefault(int(modality), {})[name] = saved[key]
        log.info("resuming after round %d", state["round"])
        self.progress(f"resuming after round {state['round']}")
        return state["round"] + 1, state["wall_seconds"]

    def first_mixed_from_rows(self) -> dict[int, int]:
        """The round each modality first mixed, from the kept rounds' lines (a checkpoint without
        ``first_mixed``)."""
        first: dict[int, int] = {}
        rows = read_rounds(self.recorder.run_dir) if self.recorder.metrics_path.is_file() else []
        for row in rows:
            for modality in received_mix(row):
                first.setdefault(int(modality), row["round"])
        return first

    def run_round(self, server_round: int, grid: Grid) -> None:
        """Codes (piggy-backed or QUERYed), the mix, TRAIN, when at least min-modalities answered."""
        query_start = time.perf_counter()
        self.codes = {a: codes for a, codes in self.next_codes.items() if self.node_of.get(a) in self.node_ids}
        self.anchor_codes = {a: codes for a, codes in self.next_anchor_codes.items() if a in self.codes}
        self.next_codes, self.next_anchor_codes = {}, {}
        held = {self.node_of[a] for a in self.codes}
        self.collect_codes(server_round, grid, [node for node in self.ready_nodes() if node not in held])
        self.count_bytes("bytes_up", {agent: codes.nbytes for agent, codes in self.codes.items()})
        self.pooled = self.pool(self.codes)
        self.row["seconds"]["query"] = time.perf_counter() - query_start
        if len(self.pooled) < self.config["min-modalities"]:
            self.row["skipped"] = (f"only {len(self.pooled)} of {self.n_modalities} modalities sent valid codes, "
                                   f"fewer than min-modalities {self.config['min-modalities']}")
            log.warning("round %d skipped: %s", server_round, self.row["skipped"])
            return
        messages = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
        if self.alignment is not None:
            self.row["frames"] = {"reference": self.alignment.reference,
                                  "confidence": {str(m): c for m, c in self.alignment.confidences.items()},
                                  "readings": {str(m): r for m, r in self.alignment.readings.items()},
                                  "objective": {str(m): v for m, v in self.alignment.objectives.items()},
                                  "mixed": self.mixed_modalities, "opened": sorted(self.gate.opened)}
        if self.mix_result is not None:
            result = self.mix_result.barycenter
            self.row["mixer"] = {"objective": result.objective, "initial_objective": result.initial_objective,
                                 "modalities": self.mixed_modalities, "received": self.receiving}
            if self.flow_readings:
                self.row["mixer"]["flow"] = {str(m): {"own": own, "others": others}
                                             for m, (own, others) in self.flow_readings.items()}
            for modality in self.receiving:
                self.first_mixed.setdefault(modality, server_round)
        alignment = self.alignment_diagnostic(server_round)
        if alignment is not None:
            self.row["alignment"] = alignment
        train_start = time.perf_counter()
        self.aggregate_train(server_round, self.exchange(grid, messages, TRAIN))
        self.row["seconds"]["train"] = time.perf_counter() - train_start

    def ready_nodes(self) -> list[int]:
        """The connected nodes the round asks: all, or with several sites per modality those that
        said HELLO (a node is asked as the site it said it is)."""
        return [node for node in self.node_ids if not self.several_sites or node in self.hellos]

    def finish_round(self, server_round: int, num_rounds: int) -> None:
        row = self.row
        missing = sorted(set(range(self.n_modalities)) - {int(label.split(".")[0]) for label in row.get("losses", {})})
        row["missing_modalities"] = missing
        if self.several_sites:
            trained = set(row.get("losses", {}))
            row["missing_sites"] = [label for label in (self.agent_label((m, s)) for m, count in enumerate(self.site_counts)
                                                        for s in range(count)) if label not in trained]
        if self.recorder is not None:
            self.recorder.record_round(row)
        totals = [losses.get("total", float("nan")) for losses in row.get("losses", {}).values()]
        mean_total = np.mean(totals) if totals else float("nan")
        line = f"round {server_round:>3}/{num_rounds}  loss (mean total) {mean_total:8.4f}"
        line += f"  {row['seconds']['total']:6.2f} s"
        if server_round == 1:  # the first exchange starts the agents (Ray actors, models, data)
            first = row["seconds"].get("query", row["seconds"].get("train", 0.0))
            line += f" (first exchange {first:.2f} s, including the agents' start-up)"
        if self.mixes:
            line += f"  mixed {len(received_mix(row))} of {self.n_modalities} modalities"
        if "eval" in row and self.config["task"] != "clustering":
            name = SCORE_OF_TASK[self.config["task"]]
            line += f"  {name} " + " ".join(f"{value:.4f}" for value in row["eval"][f"{name}_per_modality"])
            if f"late_fusion_{name}" in row["eval"]:
                line += f"  late fusion {row['eval'][f'late_fusion_{name}']:.4f}"
        elif "eval" in row:
            line += f"  purity {row['eval']['purity']:.4f}  acc {row['eval']['acc']:.4f}  nmi {row['eval']['nmi']:.4f}"
            if "fused_purity" in row["eval"]:
                line += f"  fused purity {row['eval']['fused_purity']:.4f}"
        if missing:
            line += f"  missing modalities {missing}"
        self.progress(line)

    def summary_record(self, rounds: int, wall_seconds: float) -> dict[str, Any]:
        final = dict(self.final_scores)
        return {"scenario": self.config["scenario"], "strategy": self.name, "rounds": rounds,
                "seed": self.config["seed"], "wall_seconds": wall_seconds, "final": final,
                "mixing": self.mixing_record(),
                "failures_per_node": {str(node): count for node, count in sorted(self.failure_counts.items())}}

    def mixing_record(self) -> list[dict[str, Any]]:
        """Per modality: whether a TRAIN message ever carried it a mix, from which round, and if
        never, why it trained alone (``format_summary`` puts it in words): a modality whose codes
        were mixed (it has flow readings) but never took the mix back is a teacher."""
        gated = self.config["align"] != "none" and bool(self.gate.thresholds)
        alone = NO_MIXING_BY_DESIGN if not self.mixes else GATE_CLOSED if gated else NO_PARTNER
        return [{"modality": m, "mixed": m in self.first_mixed, "first_mixed_round": self.first_mixed.get(m),
                 "trained_alone_because": None if m in self.first_mixed else
                 TEACHER if m in self.flow_history else alone}
                for m in range(self.n_modalities)]


class LocalOnlyStrategy(OTMStrategy):
    """Each WAE trains alone on its own batches (the paper's MWAE baseline): no codes leave."""

    name = "local-only"
    mixes = False

    def next_seed(self, server_round: int) -> int | None:
        return None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The same TRAIN to every node; a site of a modality held at several sites gets its share
        of the batch and the FedAvg part (``site_weights``), as under OTM."""
        messages, self.trained_as = [], {}
        for node in self.ready_nodes():
            site = {} if node not in self.hellos else self.site_weights(server_round, self.hellos[node].agent)
            payload = train_request(server_round, self.node_batch_size(node), self.round_seed(server_round),
                                    evaluation=self.piggyback_evaluation(server_round), **site)
            messages.append(Message(to_records(payload), dst_node_id=node, message_type=TRAIN))
        self.site_average = {}  # delivered
        return messages

    def run_round(self, server_round: int, grid: Grid) -> None:
        train_start = time.perf_counter()
        messages = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
        self.aggregate_train(server_round, self.exchange(grid, messages, TRAIN))
        self.row["seconds"]["train"] = time.perf_counter() - train_start


STRATEGIES: dict[str, type[OTMStrategy]] = {"otm": OTMStrategy, "local-only": LocalOnlyStrategy}


def strategy_class(name: str) -> type[OTMStrategy]:
    """A built-in strategy by name, or a user's subclass of OTMStrategy by 'package.module:Class'."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    module_name, _, class_name = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load strategy {name!r}: {error}") from error
    if not (isinstance(found, type) and issubclass(found, OTMStrategy)):
        raise ValueError(f"strategy {name!r} is not a subclass of server.strategy.OTMStrategy")
    return found
