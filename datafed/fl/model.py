"""The PyTorch model trained across agencies, and its local train/evaluate steps.

The model is named in the signed training spec (:func:`datafed.fl.spec.check_model_ref`):

- ``"mlp:16"`` -- datafed's small multilayer perceptron for binary outcomes (one hidden
  layer of 16 units; ``"mlp:32,16"`` two; ``"mlp:"`` logistic regression), the default;
- ``"package.module:factory"`` -- any importable callable ``factory(n_features)``
  returning a ``torch.nn.Module`` that maps ``(batch, n_features)`` float32 features to
  one logit per row (binary cross-entropy with logits is the loss). It runs where the
  model is built: the analyst's ServerApp (initial weights, seeded) and each node's
  ClientApp -- only where the node's ``allowed_models`` lists it (docs/training.md).

Weights travel as Flower ``NDArrays`` in ``state_dict`` order, always float32, so every
party hashes the same bytes (:func:`datafed.fl.digest.arrays_digest`).

This module imports torch; the rest of :mod:`datafed.fl` does not need it at import time.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from datafed.fl.spec import check_model_ref, is_builtin_model

__all__ = [
    "LocalTraining",
    "build_model",
    "evaluate_model",
    "evaluate_rows",
    "get_weights",
    "initial_weights",
    "load_factory",
    "parse_model",
    "set_weights",
    "train_model",
]

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LocalTraining:
    """Hyperparameters of one agency's local training within a round."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.02

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def parse_model(model: str) -> tuple[int, ...]:
    """Parse a model name ``"mlp:H1,H2,..."`` into hidden layer widths.

    Raises
    ------
    ValueError
        If the name is not of that form or a width is not in [0, 1024].
    """
    family, _, rest = model.partition(":")
    if family != "mlp":
        raise ValueError(f"model must look like 'mlp:16' or 'mlp:32,16', got {model!r}")
    widths: list[int] = []
    for part in filter(None, rest.split(",")):
        if not part.isdigit() or not 0 <= int(part) <= 1024:
            raise ValueError(f"hidden width must be an integer in [0, 1024], got {part!r}")
        if int(part):
            widths.append(int(part))
    return tuple(widths)


def load_factory(model: str) -> Callable[[int], nn.Module]:
    """Import the factory named ``"package.module:factory"``.

    Raises
    ------
    ValueError
        If the reference is malformed, or the module or attribute cannot be imported.
    """
    module, _, attr = check_model_ref(model).partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import model factory {model!r}: {exc}") from exc
    if not callable(factory):
        raise ValueError(f"model factory {model!r} is not callable")
    return factory  # type: ignore[no-any-return]


def build_model(n_features: int, model: str = "mlp:16", seed: int = 0) -> nn.Module:
    """Build the network with seeded initial weights.

    Parameters
    ----------
    n_features : int
        Number of input features.
    model : str
        ``"mlp:..."`` (see :func:`parse_model`) or ``"package.module:factory"``.
    seed : int
        Seed for the initial weights (the analyst's global model 0); a factory is
        called with torch's global generator seeded with it.

    Raises
    ------
    ValueError, TypeError
        If the model name is invalid or a factory does not return a ``torch.nn.Module``.
    """
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1, got {n_features}")
    if not is_builtin_model(model):
        factory = load_factory(model)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = factory(n_features)
        if not isinstance(net, nn.Module):
            raise TypeError(
                f"model factory {model!r} returned {type(net).__name__}, not a torch.nn.Module"
            )
        return net
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    width = n_features
    for hidden in parse_model(model):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 1))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            bound = 1.0 / float(np.sqrt(p.shape[-1]))
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))
    return net


def get_weights(net: nn.Module) -> list[Floats]:
    """Return the parameters as float32 numpy arrays in ``state_dict`` order."""
    return [
        v.detach().cpu().numpy().astype(np.float32, copy=True) for v in net.state_dict().values()
    ]


def set_weights(net: nn.Module, weights: list[npt.NDArray[np.generic]]) -> None:
    """Load parameters given as arrays in ``state_dict`` order (cast to float32)."""
    keys = list(net.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError(f"model has {len(keys)} parameter arrays, got {len(weights)}")
    state = OrderedDict(
        (k, torch.from_numpy(np.asarray(w, dtype=np.float32).copy()))
        for k, w in zip(keys, weights, strict=True)
    )
    net.load_state_dict(state, strict=True)


def initial_weights(n_features: int, model: str = "mlp:16", seed: int = 0) -> list[Floats]:
    """Return the seeded initial global model as arrays."""
    return get_weights(build_model(n_features, model, seed))


def train_model(net: nn.Module, x: Floats, y: Floats, cfg: LocalTraining, seed: int = 0) -> float:
    """Train in place with Adam on binary cross-entropy; return the last epoch's mean loss."""
    if len(x) == 0:
        raise ValueError("no training rows")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = (
        torch.from_numpy(np.asarray(x, np.float32)),
        torch.from_numpy(np.asarray(y, np.float32)),
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    net.train()
    last = 0.0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(xt), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(xt), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]).squeeze(-1), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.item()) * len(idx)
            seen += len(idx)
        last = total / seen
    return last


def evaluate_model(net: nn.Module, x: Floats, y: Floats) -> tuple[float, float]:
    """Return ``(mean binary cross-entropy, accuracy)`` on the given rows."""
    if len(x) == 0:
        raise ValueError("no evaluation rows")
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(np.asarray(x, np.float32))).squeeze(-1)
        yt = torch.from_numpy(np.asarray(y, np.float32))
        loss = float(nn.functional.binary_cross_entropy_with_logits(logits, yt).item())
        acc = float(((logits > 0).float() == yt).float().mean().item())
    return loss, acc


def evaluate_rows(
    net: nn.Module, x: Floats, y: Floats
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each row's binary cross-entropy and whether it is classified right (none: empty)."""
    if len(x) == 0:
        return np.zeros(0, np.float64), np.zeros(0, np.bool_)
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(np.asarray(x, np.float32))).squeeze(-1)
        yt = torch.from_numpy(np.asarray(y, np.float32))
        losses = nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none")
        right = (logits > 0).float() == yt
    return losses.numpy().astype(np.float64), right.numpy().astype(np.bool_)
