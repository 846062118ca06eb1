"""OTM as a Flower strategy: QUERY latent codes, mix them on the server, TRAIN, EVALUATE.

The maths lives in ``otm_fed`` (the mixer is a constructor argument); this class only decides
what to send to whom and what to keep. Subclass and override the small methods
(``query_messages``, ``mix``, ``train_payloads``, ``aggregate_scores``) to change one step.
``LocalOnlyStrategy`` is the paper's MWAE baseline on the same base: no QUERY, no mixing.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable
from typing import Any, Callable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from otm_fed.alignment import alignment_scores, batch_sample_ids
from otm_fed.clustering import clustering_loss, modality_gradients
from otm_fed.metrics import kmeans_scores
from otm_fed.mixer import Mixer, MixResult, OTMixer
from otm_fed.protocol import (
    EVALUATE,
    QUERY,
    SCORE_NAMES,
    TRAIN,
    Payload,
    ProtocolError,
    evaluate_request,
    query_request,
    read_codes_reply,
    read_evaluate_reply,
    read_train_reply,
    train_request,
)
from otm_fed.results import EVAL_CODES_FILE, RunRecorder
from server.records import from_records, payload_bytes, to_records

log = logging.getLogger("otm_fed.server")

NODE_WAIT_SECONDS = 120.0


def mixer_from_config(config: Mapping[str, Any]) -> OTMixer:
    return OTMixer(alpha=config["alpha"], barycenter_size=config["barycenter-size"] or None,
                   mask_mode=config["mask"], max_outer=config["max-outer"])


class OTMStrategy(Strategy):
    """The OT-based latent mixer over M modality agents, one round at a time."""

    name = "otm"

    def __init__(self, config: Mapping[str, Any], n_modalities: int, n_clusters: int,
                 mixer: Mixer | None = None, recorder: RunRecorder | None = None,
                 fused_labels: np.ndarray | None = None,
                 progress: Callable[[str], None] = print) -> None:
        self.config = dict(config)
        self.n_modalities = n_modalities
        self.n_clusters = n_clusters
        self.mixer = mixer if mixer is not None else mixer_from_config(config)
        self.recorder = recorder
        self.fused_labels = fused_labels
        self.progress = progress
        self.node_ids: list[int] = []
        self.node_of: dict[int, int] = {}  # modality -> node id, learnt from replies
        self.codes: dict[int, np.ndarray] = {}
        self.mix_result: MixResult | None = None
        self.row: dict[str, Any] = {}
        self.final_scores: dict[str, Any] = {}
        self.eval_codes: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ small overridable steps

    def round_seed(self, server_round: int) -> int:
        return int(np.random.default_rng([self.config["seed"], server_round]).integers(2**31))

    def query_messages(self, server_round: int, grid: Grid, node_ids: Iterable[int]) -> list[Message]:
        payload = query_request(server_round, self.config["batch-size"], self.round_seed(server_round))
        return [Message(to_records(payload), dst_node_id=node, message_type=QUERY) for node in node_ids]

    def mix(self, server_round: int, codes: Mapping[int, np.ndarray]) -> MixResult:
        """The stochastic FGW barycenter of the codes received this round, modalities in order."""
        return self.mixer([codes[m] for m in sorted(codes)], np.random.default_rng(self.round_seed(server_round)))

    def server_gradients(self, codes: Mapping[int, np.ndarray], result: MixResult) -> list[np.ndarray] | None:
        """G_m = d GW(K(Z~_B), I_C) / d Z_m (eq. 7), or None when the regulariser is off."""
        if not self.config["eta"]:
            return None
        return modality_gradients([codes[m] for m in sorted(codes)], result.transport_plans, result.masks,
                                  lambda mixed: clustering_loss(mixed, self.n_clusters))

    def train_payloads(self, server_round: int) -> dict[int, Payload]:
        """TRAIN for every modality that sent codes: Z~_B, its own plan, its gradient."""
        result = self.mix_result
        gradients = self.server_gradients(self.codes, result)
        payloads = {}
        for index, modality in enumerate(sorted(self.codes)):
            payloads[modality] = train_request(
                server_round, self.config["batch-size"], self.round_seed(server_round),
                result.mixed_barycenter, result.transport_plans[index],
                None if gradients is None else gradients[index])
        return payloads

    def alignment_diagnostic(self, server_round: int) -> dict[str, float] | None:
        """Simulation only (with ``fused-eval``): how much plan mass lands on true counterparts,
        from batches rebuilt with the agents' own batch function (``otm_fed.alignment``)."""
        if self.fused_labels is None or len(self.codes) < 2:
            return None
        ids = batch_sample_ids(len(self.fused_labels), sorted(self.codes), self.n_modalities, self.config["aligned"],
                               self.config["seed"], server_round, self.config["batch-size"],
                               self.round_seed(server_round))
        return alignment_scores(self.mix_result.transport_plans, ids, self.fused_labels)

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
        self.mix_result = self.mix(server_round, self.codes)
        payloads = self.train_payloads(server_round)
        self.row["seconds"]["mix"] = time.perf_counter() - start
        for modality, payload in payloads.items():
            self.row["bytes_down"][modality] = self.row["bytes_down"].get(modality, 0) + payload_bytes(payload)
        return [Message(to_records(payload), dst_node_id=self.node_of[modality], message_type=TRAIN)
                for modality, payload in payloads.items()]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        losses: dict[int, dict[str, float]] = {}
        for reply in self.valid_replies(replies, TRAIN):
            modality, metrics = read_train_reply(from_records(reply.content))
            losses[modality] = metrics
        self.row["losses"] = {str(m): losses[m] for m in sorted(losses)}
        totals = [metrics["total"] for metrics in losses.values() if "total" in metrics]
        return None, MetricRecord({"total": float(np.mean(totals))} if totals else {})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        payload = evaluate_request(server_round, self.n_clusters, self.config["kmeans-init"],
                                   self.config["fused-eval"])
        return [Message(to_records(payload), dst_node_id=node, message_type=EVALUATE)
                for node in self.node_of.values()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        scores: dict[int, dict[str, float]] = {}
        eval_codes: dict[int, np.ndarray] = {}
        for reply in self.valid_replies(replies, EVALUATE):
            modality, modality_scores, codes = read_evaluate_reply(
                from_records(reply.content), self.config["latent-dim"], self.config["fused-eval"])
            scores[modality] = modality_scores
            if codes is not None:
                eval_codes[modality] = codes
        if not scores:
            return None
        aggregated = self.aggregate_scores(scores)
        if self.fused_labels is not None and len(eval_codes) == len(scores):
            fused = np.concatenate([eval_codes[m] for m in sorted(eval_codes)], axis=1)
            fused_scores = kmeans_scores(fused, self.fused_labels, self.n_clusters, self.config["kmeans-init"],
                                         self.config["seed"])
            aggregated.update({f"fused_{name}": value for name, value in fused_scores.items()})
            self.eval_codes = eval_codes
        self.row["eval"] = aggregated
        return MetricRecord({k: v for k, v in aggregated.items() if isinstance(v, float)})

    def summary(self) -> None:
        log.info("strategy %s: %d modalities, mixer %s", self.name, self.n_modalities, self.mixer)

    # ------------------------------------------------------------------ the round loop

    def valid_replies(self, replies: Iterable[Message], kind: str) -> list[Message]:
        """Replies without transport errors; failures are logged and recorded for the round."""
        valid = []
        for reply in replies:
            if reply.has_error():
                self.record_failure(reply.metadata.src_node_id, kind, f"error {reply.error.code}: {reply.error.reason}")
            else:
                valid.append(reply)
        return valid

    def record_failure(self, node: int, kind: str, reason: str) -> None:
        log.warning("round %s: %s from node %s refused: %s", self.row.get("round"), kind, node, reason)
        self.row["failures"].append({"node": node, "stage": kind, "reason": reason})

    def wait_for_nodes(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + NODE_WAIT_SECONDS
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= self.n_modalities or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if len(node_ids) < self.n_modalities:
            raise RuntimeError(f"only {len(node_ids)} of {self.n_modalities} modality nodes connected "
                               f"within {NODE_WAIT_SECONDS:.0f} s")
        return node_ids

    def collect_codes(self, server_round: int, grid: Grid, node_ids: list[int]) -> None:
        """QUERY every node; keep each valid reply's codes under the modality it states."""
        messages = self.query_messages(server_round, grid, node_ids)
        self.codes = {}
        for reply in self.valid_replies(grid.send_and_receive(messages, timeout=self.config["round-timeout"]), QUERY):
            payload = from_records(reply.content)
            try:
                modality, codes = read_codes_reply(payload, self.config["latent-dim"], self.config["batch-size"])
            except ProtocolError as error:
                self.record_failure(reply.metadata.src_node_id, QUERY, str(error))
                continue
            self.node_of[modality] = reply.metadata.src_node_id
            self.codes[modality] = codes
            self.row["bytes_up"][modality] = self.row["bytes_up"].get(modality, 0) + payload_bytes(payload)

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int | None = None,
              timeout: float | None = None, **_: Any) -> dict[str, Any]:
        """Run every round; returns the final round's aggregated scores."""
        num_rounds = num_rounds or self.config["rounds"]
        node_ids = self.node_ids = self.wait_for_nodes(grid)
        started = time.perf_counter()
        for server_round in range(1, num_rounds + 1):
            round_start = time.perf_counter()
            self.row = {"round": server_round, "seconds": {}, "bytes_up": {}, "bytes_down": {},
                        "failures": []}
            self.run_round(server_round, grid, node_ids)
            if server_round % self.config["eval-every"] == 0 or server_round == num_rounds:
                eval_start = time.perf_counter()
                replies = grid.send_and_receive(self.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(), grid),
                                                timeout=self.config["round-timeout"])
                self.aggregate_evaluate(server_round, replies)
                self.row["seconds"]["evaluate"] = time.perf_counter() - eval_start
            self.row["seconds"]["total"] = time.perf_counter() - round_start
            self.finish_round(server_round, num_rounds)
        self.final_scores = self.row.get("eval", {})
        if self.recorder is not None:
            self.recorder.write_summary(self.summary_record(num_rounds, time.perf_counter() - started))
            if self.eval_codes:  # simulation only: the final fused codes, for plots
                self.recorder.write_arrays(EVAL_CODES_FILE, labels=self.fused_labels,
                                           **{f"codes-{m}": codes for m, codes in self.eval_codes.items()})
        return self.final_scores

    def run_round(self, server_round: int, grid: Grid, node_ids: list[int]) -> None:
        query_start = time.perf_counter()
        self.collect_codes(server_round, grid, node_ids)
        self.row["seconds"]["query"] = time.perf_counter() - query_start
        if not self.codes:
            log.warning("round %d: no valid codes arrived; skipping training", server_round)
            return
        messages = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
        result = self.mix_result.barycenter
        self.row["mixer"] = {"objective": result.objective, "initial_objective": result.initial_objective,
                             "modalities": sorted(self.codes)}
        alignment = self.alignment_diagnostic(server_round)
        if alignment is not None:
            self.row["alignment"] = alignment
        train_start = time.perf_counter()
        self.aggregate_train(server_round, grid.send_and_receive(messages, timeout=self.config["round-timeout"]))
        self.row["seconds"]["train"] = time.perf_counter() - train_start

    def finish_round(self, server_round: int, num_rounds: int) -> None:
        row = self.row
        missing = sorted(set(range(self.n_modalities)) - {int(m) for m in row.get("losses", {})})
        row["missing_modalities"] = missing
        if self.recorder is not None:
            self.recorder.record_round(row)
        totals = [losses.get("total", float("nan")) for losses in row.get("losses", {}).values()]
        line = f"round {server_round:>3}/{num_rounds}  loss {np.mean(totals) if totals else float('nan'):8.4f}"
        line += f"  {row['seconds']['total']:6.2f} s"
        if "eval" in row:
            line += f"  purity {row['eval']['purity']:.4f}  acc {row['eval']['acc']:.4f}  nmi {row['eval']['nmi']:.4f}"
            if "fused_purity" in row["eval"]:
                line += f"  fused purity {row['eval']['fused_purity']:.4f}"
        if missing:
            line += f"  missing modalities {missing}"
        self.progress(line)

    def summary_record(self, rounds: int, wall_seconds: float) -> dict[str, Any]:
        final = dict(self.final_scores)
        return {"scenario": self.config["scenario"], "strategy": self.name, "rounds": rounds,
                "seed": self.config["seed"], "wall_seconds": wall_seconds, "final": final}


class LocalOnlyStrategy(OTMStrategy):
    """Each WAE trains alone on its own batches (the paper's MWAE baseline): no codes leave."""

    name = "local-only"

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        payload = train_request(server_round, self.config["batch-size"], self.round_seed(server_round))
        return [Message(to_records(payload), dst_node_id=node, message_type=TRAIN) for node in self.node_ids]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                modality, _ = read_train_reply(from_records(reply.content))
                self.node_of[modality] = reply.metadata.src_node_id
        return super().aggregate_train(server_round, replies)

    def run_round(self, server_round: int, grid: Grid, node_ids: list[int]) -> None:
        train_start = time.perf_counter()
        messages = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
        self.aggregate_train(server_round, grid.send_and_receive(messages, timeout=self.config["round-timeout"]))
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
