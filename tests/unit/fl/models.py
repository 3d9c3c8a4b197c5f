"""Model factories the FL tests name as ``tests.unit.fl.models:<factory>``.

``logistic`` is a working ``torch.nn.Module`` factory; ``broken`` fails on purpose (the
ServerApp must report its real cause); ``counted`` counts its calls, so a test can tell
whether a node ran it.
"""

from __future__ import annotations

from torch import nn

CALLS = {"counted": 0}


def logistic(n_features: int) -> nn.Module:
    """Logistic regression: one linear layer to one logit."""
    return nn.Sequential(nn.Linear(n_features, 1))


def broken(n_features: int) -> nn.Module:
    """A factory whose import works but whose call fails."""
    raise RuntimeError(f"deliberately broken model factory ({n_features} features)")


def counted(n_features: int) -> nn.Module:
    """Logistic regression that counts how often it was built in this process."""
    CALLS["counted"] += 1
    return logistic(n_features)
