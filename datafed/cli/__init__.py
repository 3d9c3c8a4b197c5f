"""``datafed``: the analyst's, data scientist's, collector's and federation operator's command.

One module per command group: :mod:`datafed.cli.app` (the root: ``query``, ``nodes``,
``info``, ``modes``), :mod:`datafed.cli.psi` (``intersection-sum``), :mod:`datafed.cli.train`
(``train``, ``simulate``, ``lineage``, ``superlink``), :mod:`datafed.cli.collect`
(``collect``), :mod:`datafed.cli.pki` (``pki``); :mod:`datafed.cli.progress` draws the live
progress lines they share.  docs/cli.md lists the commands and their exit codes.
"""

from __future__ import annotations

from datafed.cli.app import app, main

__all__ = ["app", "main"]
