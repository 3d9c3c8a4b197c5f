"""The agency's Flower runtime: Flower's SuperNode and SuperExec, without their idle waits.

A training round of the demo model took about 38 s deployed against 0.13 s in one process.
Measured on Flower 1.41 (two cores, three SuperNodes, SecAgg+: five exchanges per round),
almost all of it was waiting, not work:

- the SuperNode sleeps 3 s whenever a pull from the SuperLink finds no message, and polls
  every 0.5 s for its ClientApp's reply;
- the SuperExec polls the SuperNode for tasks every second;
- every message starts a new ``flwr-clientapp`` Python process, which imports Flower,
  torch and the ClientApp before it reads its message: 2-3 CPU-seconds each, three
  SuperNodes at once on two cores.

This module runs the same Flower code with those waits cut:

- :func:`supernode_main` runs Flower's ``flower-supernode`` in this process with its idle
  pull every ``--poll-interval`` seconds (default :data:`POLL_S`) and its reply wait at
  :data:`REPLY_WAIT_S`, in ``--isolation process`` mode with :func:`superexec_main` beside
  it (a child that exits with the SuperNode);
- :func:`superexec_main` runs Flower's own SuperExec loop, polling every
  :data:`TASK_POLL_S`, with :class:`ForkExecutor`: each ClientApp task still runs in a
  fresh process of its own, forked from a zygote that imported Flower, torch and the
  ClientApp once and never runs a task itself. Nothing of one message's run reaches the
  next (the isolation Flower's subprocess executor gives), and no message pays the imports.

What is not changed: the SuperLink, TLS to it, the Runtime API on loopback, the ClientApp
and its mods, and that every message is answered by Flower's own ``run_clientapp``. The
SuperLink sees one small pull per SuperNode every ``--poll-interval`` while idle (Flower's
own pace is one every 3 s); raise it for a federation of many agencies.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "POLL_S",
    "PRELOAD",
    "REPLY_WAIT_S",
    "TASK_POLL_S",
    "ForkExecutor",
    "patch_supernode_waits",
    "superexec_main",
    "supernode_main",
]

#: Seconds between the SuperNode's pulls from the SuperLink while it has no message.
POLL_S = 0.1
#: Seconds between the SuperNode's checks for its ClientApp's reply (a local lookup).
REPLY_WAIT_S = 0.02
#: Seconds between the SuperExec's polls of the SuperNode for a task (loopback).
TASK_POLL_S = 0.05
#: What the zygote imports once: Flower's ClientApp runner, torch, datafed's ClientApp.
PRELOAD = (
    "torch",
    "torch.optim",
    "torch._dynamo",  # torch.optim's first optimizer imports it: 6 s per message otherwise
    "flwr.supernode.runtime.run_clientapp",
    "flwr.supercore.tls",
    "nodes.fl.client_app",
    "nodes.fl.grpc_gateway",
    "datafed.fl.model",
    "httpcore",  # Flower's Runtime API client builds its transport per task
)
_FLOWER_IDLE_S = 3.0


class _Waits:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: shorter waits."""

    def __init__(self, idle_s: float, wait_s: float) -> None:
        self.idle_s, self.wait_s = idle_s, wait_s

    def sleep(self, seconds: float) -> None:
        """Flower's 3 s idle wait becomes ``idle_s``; its shorter waits at most ``wait_s``."""
        time.sleep(self.idle_s if seconds >= _FLOWER_IDLE_S else min(seconds, self.wait_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch_supernode_waits(idle_s: float = POLL_S, wait_s: float = REPLY_WAIT_S) -> None:
    """Shorten the waits of Flower's SuperNode loop (this process only).

    Raises
    ------
    RuntimeError
        If the installed Flower's SuperNode no longer waits where this expects it to.
    """
    from flwr.supernode import start_client_internal as loop

    current = getattr(loop, "time", None)
    if not (current is time or isinstance(current, _Waits)):
        raise RuntimeError("Flower's SuperNode loop changed: cannot shorten its waits")
    setattr(loop, "time", _Waits(idle_s, wait_s))  # noqa: B010 - a module attribute


def _noop() -> None:
    """Started once so the zygote imports :data:`PRELOAD` before the first task."""


def _prepare_child() -> None:
    """In each task: Flower's object pulls retry after 20 ms, not 1 s."""
    from datafed.fl.waits import shorten_pull_backoff

    shorten_pull_backoff()


def _run_task(address: str, token: str, insecure: bool, root: str | None, parent: int) -> None:
    """In a fresh fork of the zygote: Flower's ClientApp runner for one task."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    _prepare_child()
    run_clientapp(
        runtime_api_address=address,
        token=token,
        insecure=insecure,
        certificates=validate_and_resolve_root_certificates(root, insecure),
        parent_pid=parent or None,
        runtime_dependency_install=False,
    )


class ForkExecutor:
    """Flower's SuperExec executor with ClientApp tasks forked from a preloaded zygote.

    The zygote is ``multiprocessing``'s fork server: a single-threaded process that
    imports :data:`PRELOAD` and forks one child per task. Other task types go to Flower's
    own :class:`SubprocessExecutor`.
    """

    def __init__(self, preload: Sequence[str] = PRELOAD) -> None:
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))
        self._fallback = SubprocessExecutor()
        self._running: list[Any] = []

    def warm(self) -> None:
        """Start the zygote now (it imports :data:`PRELOAD`) instead of at the first task."""
        proc = self._ctx.Process(target=_noop)
        proc.start()
        proc.join()

    def get_eligible_capacity(
        self, supported_task_types: set[Any], **kwargs: Any
    ) -> tuple[set[Any], set[str]]:
        """Every task type launches at once (as Flower's subprocess executor)."""
        return self._fallback.get_eligible_capacity(supported_task_types, **kwargs)

    def wait_for_capacity(self, task_type: Any = None, **kwargs: Any) -> None:
        """No capacity gate."""
        self._fallback.wait_for_capacity(task_type, **kwargs)

    def launch(self, spec: Any) -> Any:
        """Fork a ClientApp task from the zygote; any other task as Flower would."""
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP or spec.runtime_dependency_install:
            return self._fallback.launch(spec)
        proc = self._ctx.Process(
            target=_run_task,
            args=(
                spec.runtime_api_address,
                spec.token,
                spec.insecure,
                spec.root_certificates_path,
                spec.parent_pid or 0,
            ),
            name=f"clientapp-{spec.task_id}",
        )
        proc.start()
        self._running.append(proc)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap the tasks that have finished."""
        self._running = [p for p in self._running if p.is_alive()]

    def close(self) -> None:
        """Forget running tasks (they watch the SuperNode and exit with it)."""
        self._running.clear()


def superexec_main(argv: Sequence[str]) -> None:
    """``python -m nodes.fl.runtime superexec --runtime-api-address A --parent-pid P``."""
    import argparse

    from flwr.supercore.superexec import run_superexec as loop

    parser = argparse.ArgumentParser(prog="datafed-superexec")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(list(argv))
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(TASK_POLL_S))
    executor = ForkExecutor()
    executor.warm()
    if not callable(getattr(loop, "get_executor", None)):
        raise RuntimeError("Flower's SuperExec changed: cannot give it the fork executor")
    setattr(loop, "get_executor", lambda *_a, **_k: executor)  # noqa: B010 - a module attribute
    loop.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,  # the Runtime API is on loopback, as in Flower's own subprocess mode
        parent_pid=args.parent_pid,
    )


def supernode_main(argv: Sequence[str]) -> None:
    """``python -m nodes.fl.runtime supernode [--poll-interval S] FLOWER-SUPERNODE-ARGS``.

    Starts :func:`superexec_main` beside this process, then runs Flower's SuperNode here in
    ``--isolation process`` mode with :func:`patch_supernode_waits`.
    """
    import subprocess

    args = list(argv)
    idle = POLL_S
    if "--poll-interval" in args:
        i = args.index("--poll-interval")
        idle = float(args[i + 1])
        del args[i : i + 2]
    if not 0.01 <= idle <= 3.0:
        raise SystemExit(f"--poll-interval must be between 0.01 and 3 seconds, got {idle}")
    port = args[args.index("--port") + 1] if "--port" in args else "9094"
    host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
    address, parent = f"{host}:{port}", str(os.getpid())
    superexec = [sys.executable, "-m", "nodes.fl.runtime", "superexec"]
    subprocess.Popen([*superexec, "--runtime-api-address", address, "--parent-pid", parent])
    patch_supernode_waits(idle)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from datafed.fl.waits import shorten_pull_backoff

    shorten_pull_backoff()

    sys.argv = ["flower-supernode", *args, "--isolation", "process"]
    flower_supernode()


def main() -> None:
    """``python -m nodes.fl.runtime {supernode|superexec} ...``."""
    from datafed.fl.superlink import FLOWER_ENV  # before Flower reads it at import

    for key, value in FLOWER_ENV.items():
        os.environ.setdefault(key, value)
    if len(sys.argv) < 2 or sys.argv[1] not in {"supernode", "superexec"}:
        raise SystemExit("usage: python -m nodes.fl.runtime {supernode|superexec} ...")
    run = supernode_main if sys.argv[1] == "supernode" else superexec_main
    run(sys.argv[2:])


if __name__ == "__main__":
    # Run from the module's own name, so the zygote's children find _run_task by it.
    from nodes.fl.runtime import main as _main

    _main()
