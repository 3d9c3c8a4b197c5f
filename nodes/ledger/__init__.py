"""The node's ledger service.

:mod:`nodes.ledger.servicer` is ``LedgerService`` (checkpoints, entries and proofs of the
node's own log; witnessing others); :mod:`nodes.ledger.publish` holds this node's witness
state and publishes its own checkpoints to its witnesses.
"""
