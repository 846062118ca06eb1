"""The modality agent's ClientApp: one handler per message kind, state kept in Context.state.

Flower's deployment engine may start a fresh process per message, so the agent is rebuilt from
``context.state`` on every message and saved back before replying. A node learns its modality
from ``node_config``: ``modality`` in deployment, ``partition-id`` in simulation; in deployment
``data-path`` names the site's own data file (else the scenario's dataset is read).
"""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from otm_fed.agent import ModalityAgent, modality_data
from otm_fed.config import config_from_run_config
from otm_fed.protocol import EVAL_CODES, codes_reply, metrics_reply, read_train_request
from server.records import array_record, from_records, numpy_arrays, to_records

app = ClientApp()
torch.set_num_threads(1)  # one core per simulated agent: actors must not oversubscribe the CPUs
AGENT_STATE = "agent"


def node_modality(context: Context) -> int:
    node_config = context.node_config
    if "modality" in node_config:
        return int(node_config["modality"])
    return int(node_config["partition-id"])


def load_agent(context: Context) -> ModalityAgent:
    config = config_from_run_config(context.run_config)
    modality = node_modality(context)
    data = modality_data(config, modality, str(context.node_config.get("data-path", "")))
    agent = ModalityAgent(modality, data, config)
    if AGENT_STATE in context.state:
        agent.load_state_arrays(numpy_arrays(context.state[AGENT_STATE]))
    return agent


def save_agent(agent: ModalityAgent, context: Context) -> None:
    context.state[AGENT_STATE] = array_record(agent.state_arrays())


@app.query()
def query(msg: Message, context: Context) -> Message:
    agent = load_agent(context)
    request = from_records(msg.content).config
    codes = agent.query(request["round"], request["batch-size"], request["seed"])
    save_agent(agent, context)
    return Message(to_records(codes_reply(agent.modality, codes)), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    agent = load_agent(context)
    batch_rows = None if agent.batch_indices is None else len(agent.batch_indices)
    instruction = read_train_request(from_records(msg.content), batch_rows, agent.config["latent-dim"])
    losses = agent.train(instruction)
    save_agent(agent, context)
    return Message(to_records(metrics_reply(agent.modality, losses)), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    agent = load_agent(context)
    request = from_records(msg.content).config
    scores, codes = agent.evaluate(request["n-clusters"], request["kmeans-init"], agent.config["seed"])
    arrays = {EVAL_CODES: codes} if request["fused-eval"] else None
    return Message(to_records(metrics_reply(agent.modality, scores, arrays)), reply_to=msg)
