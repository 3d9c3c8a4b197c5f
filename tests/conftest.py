"""Shared fixtures: a real local federation (three node processes, mTLS, loopback)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafed.hazmat import use_native
from datafed.local.federation import LocalFederation

# DATAFED_NATIVE=0: test the Python path of Paillier tables on purpose (the C loop is
# otherwise used wherever it is built, and tests/unit/hazmat/test_djn_native.py fails
# the run where it is not).
if os.environ.get("DATAFED_NATIVE") == "0":
    use_native(False)


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation CA with one analyst, used by unit tests that need certificates."""
    from datafed import pki

    d = tmp_path_factory.mktemp("pki")
    pki.init_ca(d)
    pki.issue(d, "analyst", "alice")
    pki.issue(d, "node", "water-north")
    return d


@pytest.fixture(scope="module")
def local_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """Three water-office nodes running as real processes; stopped after the module."""
    root = tmp_path_factory.mktemp("fed")
    fed = LocalFederation.create(root, analysts=("alice", "bob"))
    fed.start()
    fed.write_fed_toml("bob")
    try:
        yield fed
    finally:
        codes = fed.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"
