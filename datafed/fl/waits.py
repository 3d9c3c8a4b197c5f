"""Flower's object pulls retry after 1 s: start at 20 ms instead (this process only).

Every Flower message travels as objects that the receiver pulls (SuperNode from the
SuperLink, ClientApp from its SuperNode, ServerApp from the SuperLink). A pull that comes
before the sender has stored its objects is retried after an exponential backoff that
starts at one second (``PULL_INITIAL_BACKOFF`` in Flower 1.41) -- a second lost per
exchange whenever the receiver is prompt. :func:`shorten_pull_backoff` starts the backoff
at :data:`INITIAL_S` and caps it at :data:`CAP_S`; the number of tries and the total
time Flower allows are unchanged. Used by the ServerApp (``datafed.fl.server_app``) and
by the agency's SuperNode runtime (``nodes.fl.runtime``).
"""

from __future__ import annotations

__all__ = ["CAP_S", "INITIAL_S", "shorten_pull_backoff"]

#: First retry after this many seconds (doubling from there).
INITIAL_S = 0.02
#: Longest wait between two tries.
CAP_S = 1.0


def shorten_pull_backoff(initial_s: float = INITIAL_S, cap_s: float = CAP_S) -> None:
    """Start Flower's object-pull backoff at ``initial_s`` and cap it at ``cap_s``.

    Raises
    ------
    RuntimeError
        If the installed Flower's pull functions no longer take these defaults.
    """
    from flwr.supercore.inflatable import inflatable_utils as pulls

    for fn in (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree):
        defaults = fn.__kwdefaults__
        if not defaults or "initial_backoff" not in defaults or "backoff_cap" not in defaults:
            raise RuntimeError(f"Flower's {fn.__name__} changed: cannot shorten its backoff")
        defaults["initial_backoff"] = initial_s
        defaults["backoff_cap"] = cap_s
