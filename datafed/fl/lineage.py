"""A model's lineage through the ledgers (moved to :mod:`audit.lineage`, re-exported here).

The auditor's ``datafed-audit lineage`` and the analyst's ``datafed lineage`` share it; it
lives in ``audit`` because auditors must be able to run it without the analyst's library.
"""

from audit.lineage import Lineage, LineageRound, format_lineage, model_lineage

__all__ = ["Lineage", "LineageRound", "format_lineage", "model_lineage"]
