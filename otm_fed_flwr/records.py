"""Flower adapter for the wire protocol: ``otm_fed.protocol.Payload`` <-> ``RecordDict``.

The protocol itself (names, shapes, dtypes, validation) lives in ``otm_fed.protocol``; this
module only maps a Payload onto Flower records and back, for the server and the agents alike.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from otm_fed.protocol import (ANCHORS_RECORD, ARRAYS_RECORD, CONFIG_RECORD, METRICS_RECORD, RECORD_NAMES, WEIGHTS_RECORD,
                              Payload, ProtocolError)


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays as an ArrayRecord (dtype and shape kept exactly)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def to_records(payload: Payload) -> RecordDict:
    records: dict = {CONFIG_RECORD: ConfigRecord(dict(payload.config))}
    if payload.arrays:
        records[ARRAYS_RECORD] = array_record(payload.arrays)
    if payload.metrics:
        records[METRICS_RECORD] = MetricRecord(dict(payload.metrics))
    if payload.anchors:
        records[ANCHORS_RECORD] = array_record(payload.anchors)
    if payload.weights:
        records[WEIGHTS_RECORD] = array_record(payload.weights)
    return RecordDict(records)


def from_records(content: RecordDict) -> Payload:
    """The Payload in a message; any record other than the protocol's is refused."""
    extra = set(content.keys()) - set(RECORD_NAMES)
    if extra:
        raise ProtocolError(f"unexpected records {sorted(extra)}")
    payload = Payload()
    if CONFIG_RECORD in content:
        payload.config = dict(content.config_records[CONFIG_RECORD])
    if ARRAYS_RECORD in content:
        payload.arrays = numpy_arrays(content.array_records[ARRAYS_RECORD])
    if METRICS_RECORD in content:
        payload.metrics = dict(content.metric_records[METRICS_RECORD])
    if ANCHORS_RECORD in content:
        payload.anchors = numpy_arrays(content.array_records[ANCHORS_RECORD])
    if WEIGHTS_RECORD in content:
        payload.weights = numpy_arrays(content.array_records[WEIGHTS_RECORD])
    return payload


def payload_bytes(payload: Payload) -> int:
    """Bytes of array data a payload carries (what dominates its size on the wire)."""
    return int(sum(value.nbytes for part in (payload.arrays, payload.anchors, payload.weights) for value in part.values()))
