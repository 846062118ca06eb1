"""Several sites per modality, end to end in-process: each site's share of the batch, one pooled
block per modality for the mixer, each site's own columns of T_m, FedAvg only within a
modality (the wire audit), a dropped site, resume, and refusals before any round."""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients import client_app
from launcher.inprocess import InProcessGrid, run_inprocess
from otm_fed.config import DEFAULTS, ConfigError, config_from_run_config, resolve_config
from otm_fed.protocol import (ANCHOR_POSITIONS, MIXED_BARYCENTER, PLAN_COLS, PLAN_ROWS, PLAN_SHAPE, PLAN_VALUES,
                              SERVER_GRADIENT)
from otm_fed.results import CONFIG_FILE, RunRecorder, read_rounds
from otm_fed.plans import SparsePlan, decode_plan
from otm_fed_flwr.records import from_records
from server.strategy import OTMStrategy
from tests.test_faults import ServerKilled, faulty_app

# 240 samples: modality 0 at three sites of 80 rows, modality 1 at two of 120, modality 2 at one.
# The gate and the flow off, so every round mixes and every site takes the mix back.
SITES = {"rounds": "3", "eval-every": "3", "synthetic-samples": "240", "batch-size": "60", "sites": "3,2,1",
         "gate-threshold": "0", "target-flow": "false", "eta": "0.1"}
MIXED_BLOCKS: list[list[int]] = []


class BlockRecordingStrategy(OTMStrategy):
    """OTM that notes the row count of each block the mixer is given."""

    def mix(self, server_round, codes):
        MIXED_BLOCKS.append([len(codes[m]) for m in sorted(codes)])
        return super().mix(server_round, codes)


POOLED_ANCHORS: list[dict[int, np.ndarray]] = []


class AnchorPoolStrategy(OTMStrategy):
    """OTM that notes each modality's pooled anchor codes as the frames receive them."""

    def align(self, server_round, codes):
        POOLED_ANCHORS.append({m: self.pooled_anchors(m) for m in codes})
        return super().align(server_round, codes)


def recording_app(seen: list) -> ClientApp:
    """The OTM ClientApp noting (kind, (modality, site), request, reply) of every message."""
    app = ClientApp()

    def wrap(kind, handler):
        def call(msg: Message, context) -> Message:
            reply = handler(msg, context)
            agent = client_app.node_agent(context, config_from_run_config(context.run_config))
            seen.append((kind, agent, from_records(msg.content),
                         None if reply.has_error() else from_records(reply.content)))
            return reply
        return call

    app.query("hello")(wrap("hello", client_app.hello))
    app.query()(wrap("query", client_app.query))
    app.train()(wrap("train", client_app.train))
    app.evaluate()(wrap("evaluate", client_app.evaluate))
    return app


def run(tmp_path: Path, app: ClientApp | None = None, nodes: int = 6, **overrides) -> tuple[list[dict], dict]:
    config = resolve_config("synthetic", {**SITES, **{k.replace("_", "-"): str(v) for k, v in overrides.items()}})
    run_dir = run_inprocess(config, nodes, tmp_path / "run", app)
    return read_rounds(run_dir), json.loads((run_dir / "summary.json").read_text())


def test_sites_share_the_batch_pool_per_modality_and_average_only_within_their_modality(tmp_path):
    seen: list = []
    MIXED_BLOCKS.clear()
    rows, summary = run(tmp_path, recording_app(seen), strategy="tests.test_site_runs:BlockRecordingStrategy")
    hellos = {agent: reply.config for kind, agent, _, reply in seen if kind == "hello"}
    assert {agent: (hello["rows"], hello["width"]) for agent, hello in hellos.items()} == {
        (0, 0): (80, 40), (0, 1): (80, 40), (0, 2): (80, 40), (1, 0): (120, 30), (1, 1): (120, 30), (2, 0): (240, 20)}
    # each site encodes its share of the modality's 60 rows; the mixer sees one block of 60 per modality
    codes = [(agent, reply.arrays["latent-codes"].shape[0]) for kind, agent, _, reply in seen
             if reply is not None and "latent-codes" in reply.arrays]
    assert {agent: n for agent, n in codes} == {(0, 0): 20, (0, 1): 20, (0, 2): 20, (1, 0): 30, (1, 1): 30, (2, 0): 60}
    assert MIXED_BLOCKS == [[60, 60, 60]] * 3

    trains = [(agent, request, reply) for kind, agent, request, reply in seen if kind == "train"]
    sent_weights: dict[tuple, dict] = {}  # (round, agent) -> the weights the site sent after that round
    for agent, request, reply in trains:
        # a site receives the barycenter and its own columns of T_m, each carrying 1/N_s: no other site's codes
        assert set(request.arrays) <= {MIXED_BARYCENTER, PLAN_ROWS, PLAN_COLS, PLAN_VALUES, PLAN_SHAPE, SERVER_GRADIENT}
        plan = decode_plan(SparsePlan(request.arrays[PLAN_ROWS], request.arrays[PLAN_COLS], request.arrays[PLAN_VALUES],
                                      tuple(int(n) for n in request.arrays[PLAN_SHAPE])))
        share = dict(codes)[agent]
        assert plan.shape == (60, share)
        np.testing.assert_allclose(plan.sum(0), 1.0 / share, atol=1e-9)
        assert request.arrays[SERVER_GRADIENT].shape[0] == share
        if agent[0] == 2:  # a modality held at one site neither sends nor receives weights
            assert not request.weights and not reply.weights and "send-weights" not in request.config
            continue
        assert request.config["send-weights"] is True and reply.weights
        sent_weights[(request.config["round"], agent)] = reply.weights
    for agent, request, _ in trains:
        round_number = request.config["round"]
        if agent[0] == 2 or round_number == 1:
            assert not request.weights
            continue
        sites = [other for (r, other) in sent_weights if r == round_number - 1 and other[0] == agent[0]]
        assert len(sites) == (3 if agent[0] == 0 else 2)  # its own modality's sites only, equal rows: the mean
        for name, value in request.weights.items():
            expected = np.mean([sent_weights[(round_number - 1, other)][name].astype(np.float64) for other in sites], 0)
            np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
            assert value.shape == sent_weights[(round_number - 1, agent)][name].shape
    assert [row["site_average"] for row in rows] == [{"0": ["0.0", "0.1", "0.2"], "1": ["1.0", "1.1"]}] * 3

    final = summary["final"]
    assert list(final["acc_per_site"]) == ["0.0", "0.1", "0.2", "1.0", "1.1", "2"]
    assert min(final["acc_per_site"].values()) > 0.5  # 3 clusters: chance is about 1/3
    per_site = final["acc_per_site"]  # a modality's score: its sites' weighted by their (equal) rows
    assert final["acc_per_modality"][0] == pytest.approx(np.mean([per_site[s] for s in ("0.0", "0.1", "0.2")]))
    assert "fused_acc" not in final  # sites of different modalities hold different samples


def test_one_site_per_modality_sends_no_hello_and_no_weights(tmp_path):
    seen: list = []
    run(tmp_path, recording_app(seen), nodes=3, sites="1", rounds="2")
    assert {kind for kind, *_ in seen} == {"query", "train"}
    assert not any(request.weights or reply.weights for _, _, request, reply in seen)


def test_a_dropped_site_is_left_out_of_its_modality_average_and_pool(tmp_path):
    def hook(kind, agent, round_number, call):
        if (kind, agent, round_number) == ("query", (0, 1), 1):
            raise RuntimeError("site offline")
        return call()

    MIXED_BLOCKS.clear()
    rows, summary = run(tmp_path, faulty_app(hook, with_site=True), strategy="tests.test_site_runs:BlockRecordingStrategy")
    assert MIXED_BLOCKS[0] == [40, 60, 60]  # round 1 pools the two sites of modality 0 that answered
    assert rows[0]["site_average"] == {"0": ["0.0", "0.2"], "1": ["1.0", "1.1"]}
    assert rows[0]["missing_sites"] == ["0.1"] and rows[0]["missing_modalities"] == []
    assert rows[0]["failures"][0]["stage"] == "query"
    assert MIXED_BLOCKS[1:] == [[60, 60, 60]] * 2 and rows[1]["missing_sites"] == []  # it rejoined
    assert len(summary["final"]["acc_per_site"]) == 6


def test_killed_and_resumed_run_with_sites_ends_with_the_same_numbers(tmp_path):
    from launcher.cli import main

    common = ["simulate", "--engine", "inprocess", "--no-plots"] + [arg for key, value in {**SITES, "rounds": "4"}.items()
                                                                   for arg in ("--set", f"{key}={value}")]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0

    def kill_in_round_3(kind, agent, round_number, call):
        if (kind, agent, round_number) == ("train", (1, 1), 3):  # after modality 0's sites trained round 3
            raise ServerKilled
        return call()

    config = resolve_config("synthetic", {**SITES, "rounds": "4"})
    with pytest.raises(ServerKilled):
        run_inprocess(config, 6, tmp_path / "resumed", faulty_app(kill_in_round_3, with_site=True))
    assert [row["round"] for row in read_rounds(tmp_path / "resumed")] == [1, 2]
    assert (tmp_path / "resumed" / "site-average.npz").is_file()  # round 2's average, still to be sent
    assert main(["simulate", "--engine", "inprocess", "--no-plots", "--resume", str(tmp_path / "resumed")]) == 0
    whole, resumed = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "resumed"))
    assert resumed["final"] == whole["final"]
    for row_whole, row_resumed in zip(read_rounds(tmp_path / "whole"), read_rounds(tmp_path / "resumed")):
        assert row_resumed["losses"] == row_whole["losses"]


def test_a_site_whose_data_width_differs_from_its_modality_is_refused_before_any_round(tmp_path):
    from server.server_app import app as server_app

    config = resolve_config("synthetic", {**SITES, "sites": "2,1,1"})
    run_dir = tmp_path / "run"
    RunRecorder(run_dir, {**config, "out-dir": str(run_dir)})
    np.savez(tmp_path / "narrow.npz", X0=np.random.default_rng(0).normal(size=(120, 7)), y=np.arange(120) % 3)
    run_config = {**DEFAULTS, "scenario": str(run_dir / CONFIG_FILE), "out-dir": str(run_dir)}
    grid = InProcessGrid(client_app.app, run_config, 4)
    site_1 = list(grid.contexts)[1]  # partition 1 plays (0, 1); it now reads its own, narrower file
    grid.contexts[site_1].node_config = {"modality": 0, "site": 1, "data-path": str(tmp_path / "narrow.npz")}
    with pytest.raises(ConfigError, match="modality 0 site 1 holds data of width 7, its modality's other sites 40") as refused:
        server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    assert "\n" not in str(refused.value)
    assert not (run_dir / "metrics.jsonl").is_file()  # no round ran


@pytest.mark.parametrize("overrides, message", [
    ({"task": "classification"}, "run task = clustering only"),
    ({"sites": "3,0,1"}, "modality 1 no site"),
])
def test_sites_with_what_they_cannot_run_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        resolve_config("synthetic", {**SITES, **overrides})
    assert "\n" not in str(refused.value)


def test_anchors_held_across_a_modality_s_sites_are_pooled_in_anchor_order(tmp_path):
    """Each anchor is held by one site of each modality; each site sends the codes of its own with
    their positions, and the server puts every modality's K anchors together before the frames."""
    seen, POOLED_ANCHORS[:] = [], []
    rows, _ = run(tmp_path, recording_app(seen), anchors=12, strategy="tests.test_site_runs:AnchorPoolStrategy")
    assert len(rows) == 3 and len(POOLED_ANCHORS) == 3
    sent: dict[tuple[int, int], np.ndarray] = {}
    for kind, agent, _, reply in seen:
        if kind == "query":
            sent[agent] = reply.anchors[ANCHOR_POSITIONS]
    for modality, n_sites in enumerate((3, 2, 1)):
        positions = np.concatenate([sent[(modality, site)] for site in range(n_sites)])
        assert sorted(positions.tolist()) == list(range(12))
    assert all(np.isfinite(pooled).all() and pooled.shape == (12, 16)
               for round_pooled in POOLED_ANCHORS for pooled in round_pooled.values())
    assert all(set(row["frames"]["confidence"]) == {"0", "1", "2"} for row in rows)


def test_each_site_gets_the_targets_of_its_own_rows_of_the_pooled_plan():
    """Eq. 4 on a site's block of T_m gives exactly the rows of the modality's targets that are the
    site's codes: the pool keeps site order and the scaling by N_m / N_s leaves targets unchanged."""
    from otm_fed.plans import project_to_modality

    config = resolve_config("synthetic", {"sites": "2,1,1"})
    otm = OTMStrategy(config, 3, 3)
    rng = np.random.default_rng(0)
    codes = {(0, 0): rng.normal(size=(3, 4)), (0, 1): rng.normal(size=(2, 4)), (1, 0): rng.normal(size=(5, 4))}
    pooled = otm.pool(codes)
    np.testing.assert_array_equal(pooled[0][3:], codes[(0, 1)])
    plan = rng.dirichlet(np.ones(5), size=4) / 4  # rows sum to 1/N_B = 1/4
    plan = plan / plan.sum(0) / 5  # columns to 1/N_m = 1/5 (rows no longer exactly 1/4: eq. 4 needs columns)
    barycenter = rng.normal(size=(4, 4))
    whole = project_to_modality(barycenter, plan)
    for agent, rows in (((0, 0), slice(0, 3)), ((0, 1), slice(3, 5))):
        block = otm.site_plan(agent, plan)
        np.testing.assert_allclose(block.sum(0), 1.0 / (rows.stop - rows.start))
        np.testing.assert_allclose(project_to_modality(barycenter, block), whole[rows])
