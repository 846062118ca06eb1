"""Faults on the in-process engine (same ServerApp/ClientApp code path as Flower's engines): an agent
that raises, one that answers too late, malformed replies and requests, too few modalities;
piggy-backing that keeps the numbers; the latent privacy option."""

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from flwr.clientapp import ClientApp

from clients import client_app
from otm_fed.agent import privatise_codes
from otm_fed.config import ConfigError, config_from_run_config, resolve_config
from otm_fed.protocol import PLAN_VALUES, REFUSED
from otm_fed.results import read_rounds
from launcher.inprocess import run_inprocess
from otm_fed_flwr.records import from_records, to_records
from server.strategy import OTMStrategy

# The gate and the flow off: every agent that answers takes the mix, so the rows show who answered.
SMALL = {"rounds": "3", "eval-every": "3", "synthetic-samples": "240", "batch-size": "64", "gate-threshold": "0",
         "target-flow": "false"}


def faulty_app(hook, with_site: bool = False) -> ClientApp:
    """The OTM ClientApp with ``hook(kind, modality, round, call)`` around each handler (``with_site``:
    ``hook(kind, (modality, site), round, call)``): it may raise, sleep, or change the reply
    ``call()`` returns. HELLO passes through."""
    app = ClientApp()
    app.query("hello")(client_app.hello)
    for kind, handler in (("query", client_app.query), ("train", client_app.train),
                          ("evaluate", client_app.evaluate)):
        def call(msg: Message, context, handler=handler, kind=kind) -> Message:
            round_number = msg.content.config_records["config"]["round"]
            agent = client_app.node_agent(context, config_from_run_config(context.run_config))
            return hook(kind, agent if with_site else agent[0], round_number, lambda: handler(msg, context))
        getattr(app, kind)()(call)
    return app


def run(tmp_path: Path, hook=None, **overrides) -> tuple[list[dict], dict]:
    config = resolve_config("synthetic", {**SMALL, **{k.replace("_", "-"): str(v) for k, v in overrides.items()}})
    run_dir = run_inprocess(config, 3, tmp_path / "run", faulty_app(hook) if hook else None)
    return read_rounds(run_dir), json.loads((run_dir / "summary.json").read_text())


def change_reply(reply: Message, change) -> Message:
    payload = from_records(reply.content)
    change(payload)
    return Message(to_records(payload), reply_to=reply)  # reply_to takes the reply's own ids


def test_piggyback_keeps_the_numbers_and_saves_exchanges(tmp_path):
    seen: dict[str, Counter] = {}

    def counting(label):
        seen[label] = Counter()

        def hook(kind, modality, round_number, call):
            seen[label][kind] += 1
            return call()
        return hook

    rows_on, on = run(tmp_path / "on", counting("on"), rounds=4, eval_every=2, eta=0.1)
    rows_off, off = run(tmp_path / "off", counting("off"), rounds=4, eval_every=2, eta=0.1, piggyback="false")
    for name in ("purity", "acc", "nmi", "ari", "fused_purity"):
        assert on["final"][name] == off["final"][name]
    for row_on, row_off in zip(rows_on, rows_off):
        assert row_on["losses"] == row_off["losses"]
        assert row_on["mixer"]["objective"] == row_off["mixer"]["objective"]
        assert row_on["bytes_up"] == row_off["bytes_up"]
    assert seen["off"] == {"query": 12, "train": 12, "evaluate": 6}
    assert seen["on"] == {"query": 3, "train": 12}  # one exchange per round after the first


def test_agent_that_raises_is_recorded_and_rejoins(tmp_path):
    def hook(kind, modality, round_number, call):
        if (kind, modality, round_number) == ("train", 2, 2):
            raise RuntimeError("disk full")
        return call()

    rows, summary = run(tmp_path, hook)
    assert [row["missing_modalities"] for row in rows] == [[], [2], []]
    (failure,) = rows[1]["failures"]
    assert failure["stage"] == "train" and "error 2" in failure["reason"] and "disk full" in failure["reason"]
    assert rows[1]["mixer"]["modalities"] == [0, 1, 2]  # its codes arrived; only its TRAIN failed
    assert rows[2]["failures"] == [] and set(rows[2]["losses"]) == {"0", "1", "2"}
    assert summary["failures_per_node"] == {str(failure["node"]): 1}
    assert len(summary["final"]["purity_per_modality"]) == 3


def test_agent_that_answers_after_the_timeout_is_dropped_for_that_round(tmp_path):
    def hook(kind, modality, round_number, call):
        if (kind, modality, round_number) == ("query", 1, 1):
            time.sleep(2.5)
        return call()

    rows, summary = run(tmp_path, hook, round_timeout=2.0)
    assert rows[0]["mixer"]["modalities"] == [0, 2] and rows[0]["missing_modalities"] == [1]
    assert "no reply within round-timeout (2 s)" in rows[0]["failures"][0]["reason"]
    assert rows[1]["mixer"]["modalities"] == [0, 1, 2] and rows[1]["missing_modalities"] == []
    assert set(rows[0]["bytes_up"]) == {"0", "2"}


def test_round_with_fewer_than_min_modalities_is_skipped(tmp_path):
    def hook(kind, modality, round_number, call):
        if kind == "query" and round_number == 1 and modality > 0:
            raise ConnectionError("site offline")
        return call()

    rows, summary = run(tmp_path, hook)
    assert "fewer than min-modalities 2" in rows[0]["skipped"]
    assert "mixer" not in rows[0] and rows[0]["missing_modalities"] == [0, 1, 2]
    assert len(rows[0]["failures"]) == 2
    assert rows[1]["missing_modalities"] == [] and rows[2]["missing_modalities"] == []
    assert np.isfinite(summary["final"]["purity"])


MALFORMED_REPLIES = {
    "train reply: NaN in the next round's codes": (
        "train", lambda p: p.arrays["latent-codes"].__setitem__((0, 0), np.nan), "NaN"),
    "train reply: raw features attached": (
        "train", lambda p: p.arrays.__setitem__("features", np.ones((4, 4), np.float32)), "unexpected ['features']"),
    "train reply: scores out of range": (
        "train", lambda p: p.metrics.__setitem__("eval-purity", 3.0), "[-1, 1]"),
    "train reply: claims another modality": (
        "train", lambda p: p.config.__setitem__("modality", 1), "states modality 1, was asked for modality 2"),
    "query reply: 2 rows too many": (
        "query", lambda p: p.arrays.__setitem__("latent-codes", np.zeros((66, 16), np.float32)), "more than the limit"),
}


@pytest.mark.parametrize("kind", list(MALFORMED_REPLIES))
def test_server_refuses_a_malformed_reply_and_goes_on(tmp_path, kind):
    stage, change, message = MALFORMED_REPLIES[kind]
    round_number = 3 if "scores" in kind else 1

    def hook(hook_kind, modality, hook_round, call):
        reply = call()
        if (hook_kind, modality, hook_round) == (stage, 0 if "another" not in kind else 2, round_number):
            return change_reply(reply, change)
        return reply

    rows, summary = run(tmp_path, hook)
    (failure,) = rows[round_number - 1]["failures"]
    assert failure["stage"] == stage and failure["reason"].startswith("refused") and message in failure["reason"]
    assert len(summary["final"]["purity_per_modality"]) == (2 if "scores" in kind else 3)
    assert np.isfinite(summary["final"]["purity"])


def test_server_refuses_a_malformed_evaluate_reply(tmp_path):
    def hook(kind, modality, round_number, call):
        reply = call()
        if kind == "evaluate" and modality == 1:
            return change_reply(reply, lambda p: p.metrics.pop("nmi"))
        return reply

    rows, summary = run(tmp_path, hook, piggyback="false")
    (failure,) = rows[-1]["failures"]
    assert failure["stage"] == "evaluate" and "missing ['nmi']" in failure["reason"]
    assert len(summary["final"]["purity_per_modality"]) == 2


class BadPlanStrategy(OTMStrategy):
    """Sends modality 0 a plan whose marginals are off in round 2."""

    def train_payloads(self, server_round):
        payloads = super().train_payloads(server_round)
        if server_round == 2:
            payloads[(0, 0)].arrays[PLAN_VALUES] = payloads[(0, 0)].arrays[PLAN_VALUES] * 2.0
        return payloads


def test_agent_refuses_a_bad_plan_with_an_error_reply(tmp_path):
    rows, summary = run(tmp_path, strategy="tests.test_faults:BadPlanStrategy")
    (failure,) = rows[1]["failures"]
    assert failure["stage"] == "train" and failure["reason"].startswith(f"error {REFUSED}: refused")
    assert "marginals" in failure["reason"]
    assert rows[1]["missing_modalities"] == [0] and rows[2]["missing_modalities"] == []


def test_latent_clip_and_noise():
    codes = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32) * 3
    assert privatise_codes(codes, 0.0, 0.0, np.random.default_rng(1)) is codes
    clipped = privatise_codes(codes, 1.5, 0.0, np.random.default_rng(1))
    assert np.linalg.norm(clipped, axis=1).max() == pytest.approx(1.5, rel=1e-5)
    small = codes[np.linalg.norm(codes, axis=1) < 1.5]
    np.testing.assert_allclose(privatise_codes(small, 1.5, 0.0, np.random.default_rng(1)), small)
    noisy = privatise_codes(codes, 1.5, 2.0, np.random.default_rng(1))
    assert (noisy - clipped).std() == pytest.approx(3.0, rel=0.1)  # noise std = multiplier x clip
    with pytest.raises(ConfigError, match="needs latent-clip"):
        resolve_config("synthetic", {"latent-noise-multiplier": "1.0"})


def test_latent_clip_bounds_every_code_that_leaves_an_agent(tmp_path):
    norms = []

    def hook(kind, modality, round_number, call):
        reply = call()
        arrays = from_records(reply.content).arrays
        if "latent-codes" in arrays:
            norms.append(np.linalg.norm(arrays["latent-codes"], axis=1).max())
        return reply

    rows, summary = run(tmp_path, hook, latent_clip=0.5)
    assert len(norms) == 9 and max(norms) <= 0.5 + 1e-5
    assert np.isfinite(summary["final"]["purity"])


class ServerKilled(BaseException):
    """Not an Exception: nothing catches it, as nothing survives a killed server process."""


def test_killed_and_resumed_run_ends_with_the_same_numbers(tmp_path):
    from launcher.cli import main

    common = ["simulate", "--engine", "inprocess", "--rounds", "4", "--set", "eval-every=2", "--set",
              "synthetic-samples=240", "--set", "batch-size=64", "--set", "eta=0.1", "--set", "gate-window=2"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0

    def kill_in_round_3(kind, modality, round_number, call):
        if (kind, modality, round_number) == ("train", 1, 3):  # modality 0 has already trained round 3
            raise ServerKilled
        return call()

    config = resolve_config("synthetic", {"rounds": "4", "eval-every": "2", "synthetic-samples": "240",
                                          "batch-size": "64", "eta": "0.1", "gate-window": "2"})
    with pytest.raises(ServerKilled):
        run_inprocess(config, 3, tmp_path / "resumed", faulty_app(kill_in_round_3))
    assert [row["round"] for row in read_rounds(tmp_path / "resumed")] == [1, 2]
    assert main(["simulate", "--engine", "inprocess", "--resume", str(tmp_path / "resumed")]) == 0
    whole, resumed = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "resumed"))
    assert resumed["final"] == whole["final"]
    rows_whole, rows_resumed = read_rounds(tmp_path / "whole"), read_rounds(tmp_path / "resumed")
    assert [row["round"] for row in rows_resumed] == [1, 2, 3, 4]
    for row_whole, row_resumed in zip(rows_whole, rows_resumed):
        assert row_resumed["losses"] == row_whole["losses"]
        assert row_resumed.get("mixer") == row_whole.get("mixer")
        assert row_resumed["frames"] == row_whole["frames"]  # the frame rotations and the gate were restored exactly
    # the gate opened modality 1 in round 2, before the kill: the resumed run kept it open and mixed in
    # every round after (the readings still counted travel too: test_frames checks them bit for bit)
    assert [row["frames"]["opened"] for row in rows_whole] == [[], [1], [1], [1]]
    assert [row.get("mixer", {}).get("modalities") for row in rows_resumed] == [None, [0, 1], [0, 1], [0, 1]]
    # the flow's window (2 rounds, restored too) is full from round 3: the reference takes the mix
    # back from round 3, modality 1 from round 4, in the resumed run as in the whole one
    assert [entry["first_mixed_round"] for entry in resumed["mixing"]] == [3, 4, None]
    assert resumed["mixing"] == whole["mixing"]
