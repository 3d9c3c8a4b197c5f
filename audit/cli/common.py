"""What every ``datafed-audit`` command shares: the app, literal output, options, trust.

Output is printed literally (``markup=False``): ledger values and error texts may hold
``[...]`` that rich would otherwise take for markup and eat.  Commands that read records
(report, reconcile, jobs, lineage) first verify each export against the pinned policy with
:func:`verified_logs` and refuse to read one that does not verify.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from audit.cli.groups import OptionGroup, option
from audit.errors import EXIT_CODES_HELP, AuditError, ExitCode
from audit.export import ExportDir
from audit.policy import Policy
from audit.records import DataUseRecord, decode_leaf
from audit.verify import VerifyReport, verify_log

if TYPE_CHECKING:
    from audit.remote import LedgerClient

__all__ = [
    "ALLOW_TAIL",
    "CA",
    "CERT",
    "KEY",
    "NAME",
    "NODE",
    "NO_WITNESSES",
    "POLICY",
    "REMOTE",
    "Fail",
    "Remote",
    "app",
    "command_app",
    "err",
    "load_policy",
    "out",
    "print_report",
    "progress_run",
    "run_main",
    "verified_logs",
    "version_option",
]


def command_app(help: str, **options: Any) -> typer.Typer:
    """The root of one of the three commands: its help, the exit codes, no completion.

    Tracebacks are never shown (``main`` prints one-line errors); ``options`` are further
    :class:`typer.Typer` settings.
    """
    return typer.Typer(
        help=help,
        epilog=EXIT_CODES_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        **options,
    )


app = command_app(
    "Verify data-use ledgers and report on them: entries, checkpoints, cosignatures, "
    "private parts, proofs, jobs, reports.",
    rich_markup_mode=None,
)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def run_main(
    root: typer.Typer, expected: tuple[type[BaseException], ...], *, markup: bool = True
) -> None:
    """Run a command; an ``expected`` failure prints one line and exits with its code.

    The line is literal (``escape``: a message may hold ``[a-z0-9]``); the exit code is the
    error's ``exit_code``, else :data:`ExitCode.USAGE`.  Anything else is a bug and keeps
    its traceback.
    """
    try:
        root()
    except expected as exc:
        text = " ".join(str(exc).split()) if not markup else escape(str(exc))
        if markup:
            Console(stderr=True).print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
        else:
            err.print("error: " + text)
        sys.exit(getattr(exc, "exit_code", ExitCode.USAGE))


def version_option(program: str) -> Any:
    """The ``--version`` option of ``program`` (one definition for the three commands)."""

    def show(value: bool) -> None:
        if value:
            from importlib.metadata import version

            print(f"{program} {version('datafed')}")
            raise typer.Exit()

    return typer.Option(
        False, "--version", callback=show, is_eager=True, help="print the version and exit"
    )


@app.callback()
def _root(show_version: bool = version_option("datafed-audit")) -> None:
    """Verify data-use ledgers and report on them."""


out = Console(markup=False, highlight=False, soft_wrap=True)

POLICY = typer.Option(..., "--policy", "-p", help="the auditor's policy file (pinned keys)")
NODE = typer.Option(None, "--node", help="node address host:port (online, mTLS)")
NAME = typer.Option(None, "--server-name", help="TLS name of the node (default: from address)")
CA = typer.Option(None, "--ca", help="federation CA certificate (PEM)")
CERT = typer.Option(None, "--cert", help="auditor certificate (PEM)")
KEY = typer.Option(None, "--key", help="auditor TLS private key (PEM)")
NO_WITNESSES = typer.Option(
    False,
    "--no-witnesses",
    help="accept a policy with witness quorum 0 (then the operator can rewrite its log "
    "undetectably)",
)
ALLOW_TAIL = typer.Option(
    False, "--allow-unsigned-tail", help="warn, not fail, on entries after the newest checkpoint"
)


class Fail(Exception):
    """A one-line error for the user (exit code 2)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Remote:
    """``--node`` (the log is read online, over mTLS) and the auditor's TLS options."""

    node: str | None
    server_name: str | None
    ca: Path | None
    cert: Path | None
    key: Path | None

    def check_one_of(self, path: Path | None, what: str) -> None:
        """Refuse both or neither of ``path`` (``what``: its option) and ``--node``."""
        if (path is None) == (self.node is None):
            raise Fail(f"give exactly one of {what} or --node")

    def tls(self) -> tuple[Path, Path, Path]:
        """The auditor's ``(ca, cert, key)``; :class:`Fail` unless all three are given."""
        if not (self.ca and self.cert and self.key):
            raise Fail("--node needs --ca, --cert and --key (mTLS)")
        return self.ca, self.cert, self.key

    def run(self, talk: Callable[[LedgerClient], Awaitable[T]]) -> T:
        """Run ``talk`` with a client of the node's LedgerService (mTLS); return its result."""
        from audit.remote import LedgerClient, mtls_channel

        node = self.node
        ca, cert, key = self.tls()
        assert node is not None

        async def run() -> T:
            async with mtls_channel(node, ca, cert, key, self.server_name) as channel:
                return await talk(LedgerClient(channel))

        return asyncio.run(run())


#: ``remote: Remote = REMOTE``: the --node options of a command (see :mod:`audit.cli.groups`).
REMOTE: Any = OptionGroup(
    Remote,
    (
        option("node", str, NODE),
        option("server_name", str, NAME),
        option("ca", Path, CA),
        option("cert", Path, CERT),
        option("key", Path, KEY),
    ),
)


def load_policy(path: Path, no_witnesses: bool) -> Policy:
    """Load the policy; refuse quorum 0 unless ``no_witnesses`` (then warn, once)."""
    pol = Policy.load(path)
    pol.require_witnesses(no_witnesses)
    if pol.quorum == 0:
        err.print(
            "warning: --no-witnesses: no witness vouches for these logs; their operators "
            "can rewrite history undetectably"
        )
    return pol


def progress_run(total: int | None, label: str, fn: Callable[[Callable[[int], None]], Any]) -> Any:
    """Run ``fn(step)`` under a transient progress bar on stderr."""
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        return fn(lambda k: bar.advance(task, k))


def print_report(report: VerifyReport, label: str = "") -> None:
    """Print warnings (stderr), then each finding as ``FAIL <code> at entry N: ...``."""
    for w in report.warnings:
        err.print(f"warning: {label}{w}")
    for f in report.findings:
        out.print(f"FAIL {label}{f}")


def verified_logs(
    paths: Sequence[Path], policy: Policy, *, allow_unsigned_tail: bool = False
) -> tuple[dict[str, list[DataUseRecord]], dict[str, VerifyReport]]:
    """Verify each export against ``policy``, then decode its records (index order).

    Raises
    ------
    typer.Exit
        With code 1 after printing the findings, if any export does not verify.
    Fail
        If two exports hold the same log.
    """
    logs: dict[str, list[DataUseRecord]] = {}
    reports: dict[str, VerifyReport] = {}
    exports = [ExportDir(p) for p in paths]
    total = sum(e.count() for e in exports)

    def run(step: Callable[[int], None]) -> None:
        for e in exports:
            rep = verify_log(
                e, policy, deep=True, progress=step, allow_unsigned_tail=allow_unsigned_tail
            )
            label = f"{e.path.name}: "
            print_report(rep, label)
            if not rep.ok:
                out.print(
                    f"refusing to read {e.path.name}: {len(rep.findings)} problem(s) against "
                    f"the pinned policy"
                )
                raise typer.Exit(1)
            try:
                recs = [decode_leaf(x)[1] for c in e.leaf_chunks(4096) for x in c]
            except AuditError:  # verify --deep decoded them all; defensive only
                raise Fail(f"{e.path.name}: an entry is malformed") from None
            node = rep.origin.rsplit("/", 1)[-1]  # the pinned origin names the node
            if node in logs:
                raise Fail(f"{e.path.name}: two exports hold the log of node {node}")
            logs[node], reports[node] = recs, rep

    progress_run(2 * total, "verifying", run)
    return logs, reports
