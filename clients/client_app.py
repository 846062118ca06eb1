"""The modality agent's ClientApp: one handler per message kind, state kept in Context.state.

Flower's deployment engine may start a fresh process per message, so the agent is rebuilt from
``context.state`` on every message and saved back before replying. A node learns its modality
from ``node_config``: ``modality`` (and with several sites per modality ``site``) in deployment,
``partition-id`` in simulation (through the topology ``sites``); in deployment ``data-path`` names
the site's own data file (else the scenario's dataset is read, split across the modality's sites)
and, with ``anchors`` > 0, ``anchors-file`` the site's anchor ids (else the simulation's seeded
draw).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from otm_fed.agent import ModalityAgent, latest_checkpoint, save_checkpoint
from otm_fed.config import config_from_run_config
from otm_fed.protocol import (
    EVAL_CODES,
    REFUSED,
    Agent,
    ProtocolError,
    codes_reply,
    hello_reply,
    metrics_reply,
    predictions_reply,
    read_evaluate_request,
    read_hello_request,
    read_predict_request,
    read_query_request,
    read_train_request,
    train_reply,
)
from otm_fed.scenario import ModalityData, modality_data, scenario_dataset, site_counts
from otm_fed.sites import SiteError, agent_of_partition, sites_of
from otm_fed_flwr.records import array_record, from_records, numpy_arrays, to_records

app = ClientApp()
torch.set_num_threads(1)  # one core per simulated agent: actors must not oversubscribe the CPUs
AGENT_STATE = "agent"
log = logging.getLogger("otm_fed.client")


def node_agent(context: Context, config: dict) -> Agent:
    """(modality, site) this node plays: from its ``modality`` and ``site`` (default 0) in
    deployment, from its ``partition-id`` through the topology in simulation."""
    node_config = context.node_config
    if "modality" in node_config:
        return int(node_config["modality"]), int(node_config.get("site", 0))
    partition = int(node_config["partition-id"])
    n_modalities = config["num-modalities"] or scenario_dataset(config).n_views
    try:
        return agent_of_partition(partition, site_counts(config, n_modalities))
    except SiteError as error:
        raise ProtocolError(str(error)) from None


def plays_whole_modality(config: dict, modality: int) -> bool:
    """Whether the agent's modality is held at one site (its plans are the whole T_m)."""
    try:
        return sites_of(config["sites"], modality) == 1
    except SiteError as error:
        raise ProtocolError(str(error)) from None


def node_data(context: Context, config: dict, agent: Agent) -> ModalityData:
    """What this node's ``agent`` holds: its ``data-path`` file, else its share of the scenario's data."""
    modality, site = agent
    return modality_data(config, modality, str(context.node_config.get("data-path", "")),
                         str(context.node_config.get("anchors-file", "")), site)


def checkpoint_dir(context: Context, config: dict) -> Path | None:
    """Where the agent's per-round checkpoints go: the node's ``state-dir`` (deployment), else
    ``agents/`` in the run folder; None when neither is set."""
    state_dir = str(context.node_config.get("state-dir", ""))
    if state_dir:
        return Path(state_dir)
    return Path(config["out-dir"]) / "agents" if config["out-dir"] else None


def load_agent(context: Context, round_number: int) -> ModalityAgent:
    """The agent as the last message left it; a fresh process (a resumed run, a restarted node)
    starts from its latest checkpoint before ``round_number``."""
    config = config_from_run_config(context.run_config)
    modality, site = node_agent(context, config)
    agent = ModalityAgent(modality, node_data(context, config, (modality, site)), config, site)
    if AGENT_STATE in context.state:
        agent.load_state_arrays(numpy_arrays(context.state[AGENT_STATE]))
    elif (directory := checkpoint_dir(context, config)) is not None:
        saved = latest_checkpoint(directory, modality, round_number, site)
        if saved is not None:
            agent.load_state_arrays(saved)
            log.info("node %s: modality %d site %d restored from %s", context.node_id, modality, site, directory)
    return agent


def save_agent(agent: ModalityAgent, context: Context, trained_round: int | None = None) -> None:
    """Into Context.state; after a TRAIN also into the checkpoint directory."""
    arrays = agent.state_arrays()
    context.state[AGENT_STATE] = array_record(arrays)
    directory = checkpoint_dir(context, agent.config)
    if trained_round is not None and directory is not None:
        save_checkpoint(directory, agent.modality, trained_round, arrays, agent.site)


def refusing_malformed(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """A request that breaks the protocol is logged and answered with a REFUSED error reply;
    it is never used and never ends the agent's process."""

    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except ProtocolError as error:
            log.warning("node %s refused %s message %s: %s", context.node_id, msg.metadata.message_type,
                        msg.metadata.message_id, error)
            return Message(Error(REFUSED, f"refused: {error}"), reply_to=msg)

    return wrapped


@app.query("hello")
@refusing_malformed
def hello(msg: Message, context: Context) -> Message:
    """Who this node is and how much it holds (several sites per modality): its rows and width."""
    read_hello_request(from_records(msg.content))
    config = config_from_run_config(context.run_config)
    agent = node_agent(context, config)
    data = node_data(context, config, agent)
    reply = hello_reply(agent, len(data.train), data.train.shape[1])
    return Message(to_records(reply), reply_to=msg)


@app.query()
@refusing_malformed
def query(msg: Message, context: Context) -> Message:
    round_number, batch_size, seed = read_query_request(from_records(msg.content))
    agent = load_agent(context, round_number)
    codes = agent.query(round_number, batch_size, seed)
    save_agent(agent, context)
    reply = codes_reply((agent.modality, agent.site), codes, agent.anchor_codes(round_number, seed))
    return Message(to_records(reply), reply_to=msg)


@app.train()
@refusing_malformed
def train(msg: Message, context: Context) -> Message:
    """Train; then, where asked (piggy-backing), evaluate and encode the next round's batch."""
    payload = from_records(msg.content)
    agent = load_agent(context, payload.config.get("round", 0))
    batch_rows = None if agent.batch_indices is None else len(agent.batch_indices)
    instruction = read_train_request(payload, batch_rows, agent.config["latent-dim"],
                                     plays_whole_modality(agent.config, agent.modality))
    if instruction.weights is not None:
        try:
            agent.load_model_weights(instruction.weights)
        except ValueError as error:
            raise ProtocolError(str(error)) from None
    losses = agent.train(instruction)
    scores = eval_codes = next_codes = next_anchor_codes = None
    if instruction.evaluation is not None:
        scores, eval_codes = agent.evaluate(instruction.evaluation["n-clusters"],
                                            instruction.evaluation["kmeans-init"], agent.config["seed"])
        eval_codes = eval_codes if instruction.evaluation["fused-eval"] else None
    if instruction.next_seed is not None:
        next_codes = agent.query(instruction.round + 1, instruction.batch_size, instruction.next_seed)
        next_anchor_codes = agent.anchor_codes(instruction.round + 1, instruction.next_seed)
    save_agent(agent, context, instruction.round)
    reply = train_reply((agent.modality, agent.site), losses, next_codes, scores, eval_codes, next_anchor_codes,
                        agent.model_weights() if instruction.send_weights else None)
    return Message(to_records(reply), reply_to=msg)


@app.evaluate()
@refusing_malformed
def evaluate(msg: Message, context: Context) -> Message:
    payload = from_records(msg.content)
    agent = load_agent(context, payload.config["round"])
    if agent.predictor is not None:  # supervised: scores on the own test fold, per noise level
        noise_levels, fused_eval = read_predict_request(payload)
        scores, outputs = agent.predict(noise_levels)
        reply = predictions_reply((agent.modality, agent.site), agent.config["task"], scores, outputs if fused_eval else None)
        return Message(to_records(reply), reply_to=msg)
    n_clusters, kmeans_init, fused_eval = read_evaluate_request(payload)
    scores, codes = agent.evaluate(n_clusters, kmeans_init, agent.config["seed"])
    arrays = {EVAL_CODES: codes} if fused_eval else None
    return Message(to_records(metrics_reply((agent.modality, agent.site), scores, arrays)), reply_to=msg)
