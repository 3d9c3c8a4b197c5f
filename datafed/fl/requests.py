"""The analyst's signed training requests: one per node, carried inside the Flower run.

The analyst signs before submitting the run, on the analyst's own machine; the ServerApp
(at the SuperLink) only forwards the signed bytes, so whoever runs the SuperLink cannot
change what a node is asked to train on. Each request names its node, the job, the
purpose and legal basis, and has the usual nonce and validity window (the job must
start within it; later rounds refer to the open job).
"""

from __future__ import annotations

from collections.abc import Sequence

from datafed.client.config import FederationConfig
from datafed.fl.serde import bundle_to_text, spec_to_proto
from datafed.fl.spec import TrainingSpec
from datafed.pki.ca import load_signing_key
from datafed.proto.v1 import common_pb2, training_pb2
from datafed.wire.serde import header_to_proto
from datafed.wire.signing import MAX_LIFETIME_MS, new_header, sign_body

__all__ = ["sign_training_bundle"]


def sign_training_bundle(
    fed: FederationConfig,
    spec: TrainingSpec,
    *,
    purpose: str,
    job_id: str,
    legal_basis: str = "",
    nodes: Sequence[str] | None = None,
    lifetime_ms: int = MAX_LIFETIME_MS,
) -> str:
    """Sign ``spec`` for each node of the federation and return the run-config bundle text.

    Parameters
    ----------
    fed : FederationConfig
        The analyst's federation file (identity and node names).
    spec : TrainingSpec
        What to train on, identical for every node.
    purpose, legal_basis : str
        Declared purpose and legal basis, checked by each node's policy.
    job_id : str
        The job's id (see :func:`new_job_id`).
    nodes : Sequence[str], optional
        A subset of the federation's nodes (default: all).
    lifetime_ms : int
        Validity window of each request (the job must open within it).

    Raises
    ------
    ValueError
        If ``nodes`` names a node that is not in the federation, or ``purpose`` is empty.
    """
    if not purpose:
        raise ValueError("purpose must not be empty")
    known = [n.name for n in fed.nodes]
    chosen = list(nodes) if nodes is not None else known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"node {unknown[0]!r} is not in the federation")
    key = load_signing_key(fed.tls.signing_key)
    requests: dict[str, common_pb2.SignedRequest] = {}
    for node in chosen:
        header = new_header(fed.analyst, node, job_id, purpose, legal_basis, lifetime_ms)
        body = training_pb2.TrainingRequestBody(
            header=header_to_proto(header), spec=spec_to_proto(spec)
        ).SerializeToString(deterministic=True)
        requests[node] = common_pb2.SignedRequest(body=body, signature=sign_body(body, key))
    cert = fed.tls.cert.read_bytes()
    return bundle_to_text(job_id, requests, requester_cert=cert)
