"""The ServerApp's check on what SuperNodes claim at the open step (SuperNode
authentication is off at the SuperLink: docs/training.md, "SuperNode authentication")."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from flwr.app import ConfigRecord
from flwr.supercore.task_identity import TaskIdentity

from datafed.fl.workflow import OPEN_RECORD, open_job


@pytest.fixture(autouse=True)
def serverapp_identity() -> Iterator[None]:
    """Play the ServerApp of a run (as Flower's ServerApp process and DirectGrid do)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class Reply:
    def __init__(self, nid: int, node: str) -> None:
        self.metadata = SimpleNamespace(src_node_id=nid)
        rec = ConfigRecord({"status": "approved", "node": node, "num-rows": 10})
        self.content = SimpleNamespace(config_records={OPEN_RECORD: rec})

    def has_error(self) -> bool:
        return False


class Grid:
    """Each Flower node id answers as the node it claims to be."""

    def __init__(self, claims: dict[int, str]) -> None:
        self.claims = claims

    def send_and_receive(self, msgs: Any, timeout: Any = None) -> list[Reply]:
        return [Reply(m.metadata.dst_node_id, self.claims[m.metadata.dst_node_id]) for m in msgs]


def test_a_node_claimed_twice_or_outside_the_job_is_refused() -> None:
    claims = {11: "flood-coastal", 12: "flood-riverside", 13: "flood-coastal", 14: "intruder"}
    out = open_job(Grid(claims), list(claims), "fl-1", None,  # type: ignore[arg-type]
                   expected={"flood-coastal", "flood-riverside"})  # fmt: skip
    assert out.approved == {12: "flood-riverside"} and out.rows == {"flood-riverside": 10}
    assert out.refusals["flood-coastal"].startswith(
        "UNAUTHENTICATED: 2 SuperNodes (Flower node ids 11, 13) claim to be node 'flood-coastal'"
    )
    assert "claims to be node 'intruder', which this job does not name" in out.refusals["intruder"]


def test_one_claim_per_node_of_the_job_opens() -> None:
    claims = {11: "flood-coastal", 12: "flood-riverside"}
    out = open_job(Grid(claims), list(claims), "fl-1", None, expected=set(claims.values()))  # type: ignore[arg-type]
    assert out.approved == claims and out.refusals == {}
