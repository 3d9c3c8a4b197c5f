"""The release gate: every data-derived value that leaves a node passes one of these modules.

Each channel has its release function here (``training``, ``psi``, ``collect``; the
query channel's is ``query``): it applies the dataset's rule -- under differential privacy
the channel's documented mechanism, calibrated to the (epsilon, delta) the node's one
accountant charges (:mod:`nodes.policy.budget`) -- to what would otherwise leave exact.
"""
