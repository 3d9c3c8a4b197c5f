"""A stand-in node for Flower's simulation engine: seeded synthetic agencies, no processes.

Simulating 20 agencies on one machine should not need 20 node servers. This gateway
serves partition *i* the readings of synthetic agency *i* (:mod:`datafed.fl.synthetic`)
and keeps round entries in memory. It grants every request without checking a signature
(there is no node to check it), so it is used only when the run names ``sim-data``;
a SuperNode started for a real node always uses the gRPC gateway.
"""

from __future__ import annotations

import hashlib
import threading

from datafed.fl.serde import spec_from_proto
from datafed.fl.spec import RoundEntry, TrainingGrant, TrainingSpec
from datafed.fl.synthetic import (
    FLOOD_FEATURES,
    FLOOD_LABEL,
    FLOOD_TABLE,
    AgencyProfile,
    flood_profiles,
    flood_readings,
)
from datafed.proto.v1 import common_pb2, training_pb2
from nodes.fl.errors import ClientAppError, GatewayRefused
from nodes.fl.gateway import Presented, Receipt, TrainingData

__all__ = ["SyntheticGateway"]


class SyntheticGateway:
    """Partition ``index`` of ``count`` synthetic flood-risk agencies."""

    def __init__(self, profile: AgencyProfile, seed: int, index: int) -> None:
        self.profile = profile
        self.seed = seed
        self.index = index
        self.entries: list[RoundEntry] = []
        self.epsilon_spent = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str, partition: int, count: int) -> SyntheticGateway:
        """Parse ``"flood:SEED"`` and pick the agency for ``partition``."""
        kind, _, seed_text = spec.partition(":")
        if kind != "flood" or not seed_text.isdigit():
            raise ClientAppError(f"sim-data must look like 'flood:7', got {spec!r}")
        if not 0 <= partition < count:
            raise ClientAppError(f"partition {partition} is outside [0, {count})")
        seed = int(seed_text)
        return cls(flood_profiles(count, seed)[partition], seed, partition)

    @property
    def node(self) -> str:
        """The simulated agency's name."""
        return self.profile.name

    def _spec(self, request: common_pb2.SignedRequest | None) -> TrainingSpec:
        if request is None or not request.body:
            return TrainingSpec(FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=1000)
        body = training_pb2.TrainingRequestBody.FromString(request.body)
        try:
            return spec_from_proto(body.spec)
        except (ValueError, TypeError) as exc:
            raise GatewayRefused("INVALID_ARGUMENT", str(exc)) from exc

    def open(self, presented: Presented, *, with_rows: bool) -> TrainingData:
        """Grant the request; return the agency's readings when asked."""
        request = presented.request
        spec = self._spec(request)
        if spec.columns != (*FLOOD_FEATURES, FLOOD_LABEL) or spec.dataset != FLOOD_TABLE:
            raise GatewayRefused(
                "NOT_FOUND", f"simulated agencies serve only {FLOOD_TABLE} with its own columns"
            )
        x, y = flood_readings(self.profile, self.seed, self.index)
        digest = hashlib.sha256(request.body if request is not None else b"").hexdigest()
        grant = TrainingGrant(self.node, "sim", spec, len(y), digest)
        return TrainingData(grant, x, y) if with_rows else TrainingData(grant)

    def record(self, entry: RoundEntry) -> Receipt:
        """Keep the entry in memory; refuse a (job, round, phase) recorded twice."""
        key = (entry.job_id, entry.round, entry.phase)
        with self._lock:
            if any((e.job_id, e.round, e.phase) == key for e in self.entries):
                raise GatewayRefused("FAILED_PRECONDITION", f"round {entry.round} already recorded")
            self.entries.append(entry)
            return Receipt(len(self.entries) - 1, 0.0)
