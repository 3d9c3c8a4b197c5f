"""The agency's side of Flower: the ClientApp beside the node, and SuperNode launch helpers.

The ClientApp (``nodes.fl.client_app:app``) runs in the agency's own SuperNode. It never
opens the node's files: it asks its own node, over mTLS on loopback, for the rows the
node's policy allows (:mod:`nodes.fl.grpc_gateway`), and has the node record every round
in its ledger before an update leaves the agency.
"""
