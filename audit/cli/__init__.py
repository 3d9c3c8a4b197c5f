"""``datafed-audit``: the auditor's command.

:mod:`audit.cli.app` holds the commands on logs (verify, prove, consistency, export, vkey,
...), :mod:`audit.cli.read` those that read records (report, jobs, reconcile, lineage),
:mod:`audit.cli.witnesses` the export of a witness's state (witness-export),
:mod:`audit.cli.common` what they share (the app, literal output, options, trust), and
:mod:`audit.cli.groups` how a command takes several options as one object.
"""

from __future__ import annotations

from audit.cli.app import main

__all__ = ["main"]
