"""``datafed-node reload``: the node's decision on a new policy, told back to the operator.

The command validates the file, writes a fresh token to ``state_dir/reload.request`` and
sends the serving node SIGHUP.  The node re-reads its config file, runs exactly what
``check-config`` runs (:meth:`nodes.context.NodeContext.reload`), records ``approved`` or
``denied`` in its ledger (operation ``policy_reload``) and writes its decision, the
reason, the ledger entry and the token to ``state_dir/reload.json``, which the command
waits for: exit status 0 when the node adopted the file, 1 when it refused it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from datafed.errors import ConfigError, DatafedError
from nodes.config import NodeConfig, load_node_config
from nodes.context import NodeContext, ReloadRefused

__all__ = ["ReloadOutcome", "ask_reload", "reload_policy"]

log = logging.getLogger("datafed.node")


@dataclass(frozen=True)
class ReloadOutcome:
    """A node's decision on one reload: ``approved`` or ``denied``, why, its ledger entry."""

    decision: str
    reason: str
    index: int
    token: str = ""


def _request_file(config: NodeConfig) -> Path:
    return config.node.state_dir / "reload.request"


def _status_file(config: NodeConfig) -> Path:
    return config.node.state_dir / "reload.json"


async def reload_policy(ctx: NodeContext, path: Path) -> ReloadOutcome:
    """Re-read ``path`` and adopt its policies (SIGHUP); a refused file changes nothing."""
    try:
        token = _request_file(ctx.config).read_text().strip()
    except OSError:
        token = ""  # a bare SIGHUP (kill -HUP): nobody waits for the answer
    try:
        try:
            config = load_node_config(path)
        except DatafedError as exc:
            await ctx.refuse_reload(f"{path.name}: {exc}")
        try:
            index = await ctx.reload(config)
        except (OSError, ValueError) as exc:  # a check that could not run: refuse, say why
            log.exception("policy reload check failed")
            await ctx.refuse_reload(f"the checks could not run: {exc}")
        outcome = ReloadOutcome("approved", f"policy reloaded from {path}", index, token)
        log.info("policy reloaded from %s (ledger entry %d)", path, index)
    except ReloadRefused as exc:
        outcome = ReloadOutcome("denied", str(exc), exc.index, token)
        log.error("policy reload refused, the node keeps its policy: %s", exc)
    status = _status_file(ctx.config)
    tmp = status.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(outcome)))
    os.replace(tmp, status)
    return outcome


def ask_reload(config: NodeConfig, pid_file: Path, timeout_s: float = 60.0) -> ReloadOutcome:
    """Ask the node serving ``config`` to reload it; wait for and return its decision."""
    token = secrets.token_hex(16)
    try:
        pid = int(pid_file.read_text().strip())
        _request_file(config).write_text(token + "\n")
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"node {config.node.name} is not serving from {pid_file.parent}") from exc
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = json.loads(_status_file(config).read_text())
        except (OSError, ValueError):
            got = {}
        if got.get("token") == token:
            return ReloadOutcome(**got)
        time.sleep(0.1)
    raise ConfigError(
        f"node {config.node.name} (pid {pid}) gave no decision within {timeout_s:g}s; "
        "see its log and ledger (operation policy_reload)"
    )
