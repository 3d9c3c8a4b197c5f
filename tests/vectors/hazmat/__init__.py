"""Known-answer vectors for :mod:`datafed.hazmat` and their loader.

Each ``*.json`` file beside this module names its source:

* ``paillier.json`` — ciphertexts produced by ``phe`` 1.5 (``raw_encrypt`` with fixed
  ``r``), an implementation independent of ours, and DJN powers from plain ``pow``;
* ``prg.json`` — NIST SP 800-38A F.5.1 (AES-128 CTR) and RFC 5869 test case 3 (HKDF);
* ``shamir.json`` — polynomials evaluated by hand over ``2^127 − 1``;
* ``fixedpoint.json`` — two's-complement encodings at scale ``2^16``;
* ``group.json`` — regression vectors of our hash-to-group (no external source).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> Any:
    """Return the parsed JSON vectors in ``<name>.json``."""
    return json.loads((HERE / f"{name}.json").read_text())
