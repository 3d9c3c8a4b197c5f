"""The node's policy for training jobs: who may train on which dataset, and how.

The same dataset policy as queries (``[datasets.policy]`` in ``node.toml``) decides:

- the requester and the purpose must be allowed, like for queries;
- the dataset must allow federated training: ``"training"`` among
  ``allowed_operations`` (default-deny, like every other use);
- every feature and the label must be exposed and allowed (``allowed_columns``);
- the model must be in ``allowed_models`` (a factory is code the node's SuperNode runs);
- a dataset whose policy has a ``dp`` section releases nothing without noise: a training
  job on it must ask for DP (its epsilon then draws on the same budget as queries);
- a dataset with fewer rows than ``min_group_size`` is never trained on (checked once the
  rows are read, see :mod:`nodes.training_servicer`).

Evaluation is pure (no I/O); the servicer records every decision before any data is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from datafed.fl.spec import TrainingSpec, model_allowed
from datafed.pki import Identity
from nodes.config import NodeConfig
from nodes.errors import InvalidRequest, NodeError, NotFound, PermissionDenied
from nodes.policy import Decision

__all__ = ["TRAINING_OPERATION", "check_training"]

#: The ``allowed_operations`` entry that allows federated training on a dataset.
TRAINING_OPERATION = "training"


def check_training(
    config: NodeConfig,
    columns: Mapping[str, Sequence[str]],
    identity: Identity,
    purpose: str,
    spec: TrainingSpec,
) -> Decision:
    """Evaluate a training request against the dataset's policy.

    Parameters
    ----------
    config : NodeConfig
        The node configuration (datasets and their policies).
    columns : Mapping[str, Sequence[str]]
        Exposed columns per dataset, as the store found them.
    identity : Identity
        The analyst, from the certificate that came with the request.
    purpose : str
        The declared purpose from the signed request.
    spec : TrainingSpec
        What the analyst asks to train on.

    Returns
    -------
    Decision
        Allowed, or refused with the error to send.
    """
    try:
        if identity.role != "analyst":
            raise PermissionDenied(f"role {identity.role!r} may not train models; need 'analyst'")
        ds = config.dataset(spec.dataset)
        if ds is None or spec.dataset not in columns:
            raise NotFound(f"unknown dataset {spec.dataset!r}")
        policy = ds.policy
        if identity.name not in policy.allowed_requesters:
            raise PermissionDenied(
                f"requester {identity.name!r} is not allowed to use dataset {spec.dataset!r}"
            )
        if purpose not in policy.allowed_purposes:
            raise PermissionDenied(
                f"purpose {purpose!r} is not allowed for dataset {spec.dataset!r}"
            )
        if TRAINING_OPERATION not in policy.allowed_operations:
            raise PermissionDenied(f"federated training is not allowed on dataset {spec.dataset!r}")
        if not model_allowed(spec.model, policy.allowed_models):  # a factory is code we run
            raise PermissionDenied(f"model {spec.model!r} is not in allowed_models")
        if policy.dp is not None and not spec.dp.enabled:
            raise PermissionDenied(
                f"dataset {spec.dataset!r} requires differential privacy: train with DP on"
            )
        exposed = set(columns[spec.dataset])
        unknown = [c for c in spec.columns if c not in exposed]
        if unknown:
            raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {spec.dataset!r}")
        if policy.allowed_columns is not None:
            refused = [c for c in spec.columns if c not in policy.allowed_columns]
            if refused:
                raise PermissionDenied(f"column {refused[0]!r} of {spec.dataset!r} is not allowed")
    except NodeError as exc:
        return Decision.deny(exc)
    return Decision(allowed=True, reason="policy allows federated training")
