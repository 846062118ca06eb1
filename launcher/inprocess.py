"""An in-process engine: the same ServerApp, strategy and ClientApp, without Ray or a SuperLink.

``InProcessGrid`` implements Flower's ``Grid`` by calling the ClientApp's handlers directly, one
persistent ``Context`` per simulated node, so every message takes exactly the code path it takes
in Flower's simulation and deployment engines (records are deep-copied both ways, as a transport
would). Use it for fast sweeps; ``otm-fed simulate --engine inprocess`` selects it.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Mapping

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from otm_fed.config import DEFAULTS
from otm_fed.results import CONFIG_FILE, RunRecorder

FIRST_NODE_ID = 1001


class InProcessGrid(Grid):
    """Delivers each message to its node's ClientApp in this process and returns the reply.

    A handler that raises becomes an error reply (code CLIENT_APP_RAISED_EXCEPTION). Nodes run
    one after another but each as if alone: a reply that took a node longer than the timeout
    (``send_and_receive``'s ``timeout``; for ``push_messages``, ``reply_timeout``, the round
    timeout the ServerApp waits) is dropped, as a late reply is on Flower's engines.
    """

    def __init__(self, client_app: ClientApp, run_config: Mapping[str, Any], num_nodes: int,
                 run_id: int = 1, reply_timeout: float | None = None) -> None:
        self.client_app = client_app
        self.reply_timeout = reply_timeout
        self._run = Run.create_empty(run_id=run_id)
        self.contexts = {
            FIRST_NODE_ID + index: Context(run_id=run_id, node_id=FIRST_NODE_ID + index,
                                           node_config={"partition-id": index, "num-partitions": num_nodes},
                                           state=RecordDict(), run_config=dict(run_config))
            for index in range(num_nodes)}
        self.message_ids = (f"inprocess-{n}" for n in itertools.count())
        self.replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def deliver(self, message: Message) -> Message:
        # A Grid gives each message it sends its id, in place (the strategy reads it back to match
        # replies). Flower 1.42 has no public setter for it: Metadata.message_id is a read-only
        # property, and Flower's own grids write the same private slot (InMemoryGrid,
        # GrpcGrid/HttpGrid). The delivered copy takes the whole metadata, id included, through
        # Message's ``metadata`` argument instead.
        message.metadata.__dict__["_message_id"] = next(self.message_ids)
        delivered = Message(copy.deepcopy(message.content), metadata=copy.deepcopy(message.metadata))
        try:
            reply = self.client_app(delivered, self.contexts[message.metadata.dst_node_id])
            reply = Message(copy.deepcopy(reply.error if reply.has_error() else reply.content), reply_to=message)
        except Exception as error:  # a failing agent is a reply with an error, as in Flower
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(error).__name__}: {error}"),
                            reply_to=message)
        return reply

    def deliver_within(self, message: Message, timeout: float | None) -> Message | None:
        """The reply, or None when it took longer than ``timeout`` seconds."""
        start = time.perf_counter()
        reply = self.deliver(message)
        return reply if timeout is None or time.perf_counter() - start <= timeout else None

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            reply = self.deliver_within(message, self.reply_timeout)
            if reply is not None:
                self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(message_id) for message_id in message_ids if message_id in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = (self.deliver_within(message, timeout) for message in messages)
        return [reply for reply in replies if reply is not None]


def run_inprocess(config: Mapping[str, Any], num_nodes: int, run_dir: str | Path,
                  client_app: ClientApp | None = None) -> Path:
    """Run the ServerApp against ``num_nodes`` in-process agents (``client_app``, default the
    OTM ClientApp); returns the run folder."""
    from server.server_app import app as server_app

    if client_app is None:
        from clients.client_app import app as client_app

    run_dir = Path(run_dir).resolve()
    config = {**config, "out-dir": str(run_dir)}
    RunRecorder(run_dir, config)
    run_config = {**DEFAULTS, "scenario": str(run_dir / CONFIG_FILE), "out-dir": str(run_dir)}
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    grid = InProcessGrid(client_app, run_config, num_nodes, reply_timeout=config["round-timeout"])
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return run_dir
