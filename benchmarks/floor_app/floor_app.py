"""Flower's floor: one QUERY exchange per round to every node, whose ClientApp imports torch (as
any PyTorch app's must) and replies at once. The ServerApp waits for replies exactly as the OTM
ServerApp does (``server.replies.send_and_receive``) and writes each exchange's seconds to
``out-path`` as JSON rows ``{"app": "floor", "round", "seconds"}``."""

from __future__ import annotations

import time

import torch  # noqa: F401  the import every PyTorch ClientApp pays per message
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from otm_fed.results import write_json
from server.replies import send_and_receive

client = ClientApp()
server = ServerApp()


@client.query()
def reply(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"config": ConfigRecord({"round": msg.content["config"]["round"]})}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    while len(nodes := sorted(grid.get_node_ids())) < int(config["num-nodes"]):
        time.sleep(0.5)
    rows = []
    for server_round in range(1, int(config["rounds"]) + 1):
        start = time.perf_counter()
        messages = [Message(RecordDict({"config": ConfigRecord({"round": server_round})}), dst_node_id=node,
                            message_type="query") for node in nodes]
        replies = send_and_receive(grid, messages, float(config["round-timeout"]))
        seconds = time.perf_counter() - start
        if len(replies) != len(nodes) or any(reply.has_error() for reply in replies):
            raise RuntimeError(f"round {server_round}: {len(replies)} of {len(nodes)} nodes replied")
        rows.append({"app": "floor", "round": server_round, "seconds": seconds})
    write_json(config["out-path"], rows)
