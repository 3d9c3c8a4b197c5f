"""The node's intersection-sum service.

:mod:`nodes.psi.servicer` is ``PsiService`` (one signed RPC per step); :mod:`nodes.psi.jobs`
keeps the jobs waiting for their last step at the ids node.
"""
