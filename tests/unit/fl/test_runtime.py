"""The agency's Flower runtime (nodes.fl.runtime): Flower's code, its idle waits cut."""

from __future__ import annotations

import time

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supernode import start_client_internal

from datafed.fl.superlink import child_env
from datafed.fl.waits import shorten_pull_backoff
from nodes.fl import runtime
from nodes.fl.supernode import supernode_command


@pytest.fixture
def restore_flower():  # type: ignore[no-untyped-def]
    saved_time = start_client_internal.time  # type: ignore[attr-defined]
    saved = {
        f: dict(f.__kwdefaults__ or {})
        for f in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)
    }
    yield
    start_client_internal.time = saved_time  # type: ignore[attr-defined]
    for f, d in saved.items():
        f.__kwdefaults__ = d


def test_supernode_idle_wait_becomes_the_poll_interval(restore_flower, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    runtime.patch_supernode_waits(idle_s=0.1, wait_s=0.02)
    waits = start_client_internal.time  # type: ignore[attr-defined]
    waits.sleep(3)  # Flower: nothing pulled, wait 3 s
    waits.sleep(0.5)  # Flower: wait for the ClientApp's reply
    waits.sleep(0.01)
    assert slept == [0.1, 0.02, 0.01]
    assert waits.monotonic is time.monotonic  # the rest of the module is time's


def test_supernode_waits_refuse_a_changed_flower(restore_flower) -> None:  # type: ignore[no-untyped-def]
    start_client_internal.time = object()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="changed"):
        runtime.patch_supernode_waits()


def test_object_pulls_retry_after_20_ms_not_a_second(restore_flower) -> None:  # type: ignore[no-untyped-def]
    for f in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        f.__kwdefaults__.update(initial_backoff=1, backoff_cap=10)  # Flower 1.41's own
    shorten_pull_backoff()
    for f in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert f.__kwdefaults__["initial_backoff"] == 0.02
        assert f.__kwdefaults__["backoff_cap"] == 1.0
        assert f.__kwdefaults__["max_tries_per_object"] == 500  # Flower's limits unchanged


def test_flower_processes_send_no_telemetry() -> None:
    assert child_env()["FLWR_TELEMETRY_ENABLED"] == "0"


def test_the_supernode_runs_under_the_runtime(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cmd = supernode_command(
        node_config=tmp_path / "node.toml",
        superlink="127.0.0.1:9093",
        port=9094,
        root_certificates=tmp_path / "ca.crt",
        poll_interval_s=0.2,
    )
    assert cmd[1:4] == ["-m", "nodes.fl.runtime", "supernode"]
    assert cmd[cmd.index("--poll-interval") + 1] == "0.2"


def test_other_task_types_go_to_flowers_own_executor(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

    ex = runtime.ForkExecutor(preload=())
    launched: list[ExecutionSpec] = []
    monkeypatch.setattr(
        ex._fallback, "launch", lambda spec: launched.append(spec) or LaunchResult.accepted()
    )
    spec = ExecutionSpec(TaskType.SERVER_APP, "127.0.0.1:1", "t", True, None, False, None, True, 1)
    assert ex.launch(spec).status == "accepted"
    assert launched == [spec] and not ex._running
