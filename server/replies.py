"""Waiting for replies at a short interval of our own.

Flower 1.42's ``Grid.send_and_receive`` on the deployment engine pulls replies every 3 s, so an
exchange whose replies are in after 5.1 s returns after 6 s or more. ``send_and_receive`` here
pushes the messages and pulls every ``REPLY_POLL_SECONDS`` instead; a pull is one small request
to the SuperLink (in simulation, to the in-memory state).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import Message
from flwr.serverapp import Grid

REPLY_POLL_SECONDS = 0.1  # as Flower's in-memory (simulation) grid; its deployment grid pulls every 3 s


def send_and_receive(grid: Grid, messages: Sequence[Message], timeout: float | None,
                     interval: float = REPLY_POLL_SECONDS) -> list[Message]:
    """Push ``messages``, then pull their replies every ``interval`` seconds until every one has
    come or ``timeout`` seconds have passed since the push began (None: no limit). At least one
    pull follows the push, so replies a synchronous grid already holds are never lost."""
    if not messages:
        return []
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    while pending:
        pulled = list(grid.pull_messages(pending))
        replies += pulled
        pending -= {reply.metadata.reply_to_message_id for reply in pulled}
        left = float("inf") if deadline is None else deadline - time.monotonic()
        if not pending or left <= 0:
            break
        time.sleep(min(interval, left))
    return replies
