"""server.replies.send_and_receive: replies are taken at the short interval, not Flower's 3 s, and
the timeout counts from the push."""

import time
from types import SimpleNamespace

from server.replies import send_and_receive


class DelayedGrid:
    """Message i's reply can be pulled ``delays[i]`` seconds after the push."""

    def __init__(self, delays: list[float]) -> None:
        self.delays, self.pulls = delays, 0

    def push_messages(self, messages):
        self.pushed = time.monotonic()
        return [f"m{index}" for index in range(len(messages))]

    def pull_messages(self, message_ids):
        self.pulls += 1
        elapsed = time.monotonic() - self.pushed
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=message_id))
                for message_id in message_ids if self.delays[int(message_id[1:])] <= elapsed]


def test_replies_come_within_one_interval_of_the_last_one():
    grid = DelayedGrid([0.0, 0.3, 0.5])
    start = time.monotonic()
    replies = send_and_receive(grid, ["a", "b", "c"], timeout=10.0, interval=0.05)
    assert sorted(reply.metadata.reply_to_message_id for reply in replies) == ["m0", "m1", "m2"]
    assert 0.5 <= time.monotonic() - start < 1.0


def test_a_late_reply_is_left_out_at_the_timeout():
    grid = DelayedGrid([0.0, 5.0])
    start = time.monotonic()
    replies = send_and_receive(grid, ["a", "b"], timeout=0.3, interval=0.05)
    assert [reply.metadata.reply_to_message_id for reply in replies] == ["m0"]
    assert 0.3 <= time.monotonic() - start < 0.8


def test_nothing_to_send_pulls_nothing():
    grid = DelayedGrid([])
    assert send_and_receive(grid, [], timeout=1.0) == [] and grid.pulls == 0
