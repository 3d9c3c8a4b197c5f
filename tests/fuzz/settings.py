"""How long to fuzz: a bounded, reproducible run in ``make test``, a long one in ``make fuzz``.

``DATAFED_FUZZ`` picks the profile: ``ci`` (default: a fixed seed and ``ci`` examples per
target, a few hundred in all, so the suite stays fast and repeatable) or ``long``
(``make fuzz``: many examples, fresh randomness each run, failures kept in
``.hypothesis/`` so they replay). ``fuzz(n)`` decorates a target with ``n`` CI examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

F = TypeVar("F", bound=Callable[..., Any])
PROFILE = os.environ.get("DATAFED_FUZZ", "ci")
#: Examples per target in ``make fuzz`` (``DATAFED_FUZZ_EXAMPLES`` overrides).
LONG_EXAMPLES = int(os.environ.get("DATAFED_FUZZ_EXAMPLES", "5000"))
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def fuzz(ci_examples: int) -> Callable[[F], F]:
    """Settings for one fuzz target (see module docs)."""
    if PROFILE == "long":
        return settings(
            max_examples=LONG_EXAMPLES,
            deadline=None,
            suppress_health_check=[*_QUIET, HealthCheck.function_scoped_fixture],
        )
    if PROFILE != "ci":
        raise ValueError(f"DATAFED_FUZZ must be 'ci' or 'long', got {PROFILE!r}")
    return settings(
        max_examples=ci_examples,
        derandomize=True,  # a fixed seed per target: the same examples on every run
        database=None,  # nothing written outside the repository's temporary files
        deadline=None,
        print_blob=True,
        suppress_health_check=[*_QUIET, HealthCheck.function_scoped_fixture],
    )
