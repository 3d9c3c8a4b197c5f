"""One fixed text for every failure of a release (``docs/invisibility.md``).

Only the release gate reads data, so only a release can fail in a way that depends on
the data -- a value the encoding refuses, an engine error on one row, a group count. A
release runs its reading and computing under :func:`one_text`: every failure but the
request's own (:class:`~nodes.errors.RequestFault`, said without the data) becomes
:class:`~nodes.errors.ReleaseFailed`, whose text is the same whatever happened; the real
reason is kept for the ledger entry's private part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from nodes.errors import NodeError, ReleaseFailed, RequestFault, Unavailable, status_of

__all__ = ["one_text"]

log = logging.getLogger("datafed.node")
P = ParamSpec("P")
T = TypeVar("T")


def one_text(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` with every failure but a :class:`RequestFault` turned into ReleaseFailed."""

    @wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (RequestFault, ReleaseFailed, Unavailable):
            raise
        except NodeError as exc:
            code, message = status_of(exc)
            reason = f"{code.name}: {message}"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:1000]
        log.warning("a release failed after admission: %s", reason)
        raise ReleaseFailed(reason)

    return guarded
