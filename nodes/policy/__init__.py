"""The node's policy engine: one admission for every use of a dataset (``docs/policy.md``).

:class:`PolicyEngine` admits a :class:`Use` (a query, one side of an intersection-sum, a
training job) into a :class:`Grant`, atomically with its ledger entry and its privacy
charge; :mod:`.rules` holds the pure rules, :mod:`.budget` the privacy budgets,
:mod:`.signoff` other agencies' approvals and :mod:`.dp` the noise.
"""

from nodes.policy.engine import Grant, PolicyEngine, Recorder, Use

__all__ = ["Grant", "PolicyEngine", "Recorder", "Use"]
