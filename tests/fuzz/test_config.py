"""Fuzzing the three configuration files: node.toml, fed.toml and the auditor's policy.

Each loader gets arbitrary text, valid files with lines edited, and valid documents whose
values are replaced by values of any TOML type (nested tables, arrays, NaN, huge
integers, long and odd strings). It must return a validated config or raise its one
documented error -- :class:`~datafed.errors.ConfigError` (node, federation) or
``ValueError`` (the auditor's policy) -- with a message of one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from audit.note import raw_public_key, vkey
from audit.policy import Policy
from datafed.client.config import load_federation
from datafed.errors import ConfigError
from nodes.config import load_node_config
from tests.fuzz.settings import fuzz

NODE_TOML = """\
[node]
name = "water-north"
listen = "127.0.0.1:0"
max_message_bytes = 16777216

[tls]
ca = "pki/ca.crt"
cert = "pki/node.crt"
key = "pki/node.key"
signing_key = "pki/node.ed25519"

[[datasets]]
name = "pipe_incidents"
path = "data/pipes.sqlite"
columns = ["year", "bursts", "material"]

[datasets.policy]
allowed_requesters = ["alice"]
allowed_purposes = ["service-planning"]
allowed_protections = ["paillier", "plain"]
min_group_size = 5
person_level = false
consortium = ["water-north", "water-east", "water-south"]
paillier_bits = [2048, 3072]

[datasets.policy.group_domains]
material = ["pvc", "steel"]

[limits]
max_values = 100000
max_open_jobs_per_requester = 8
paillier_cache_bytes = 268435456
"""
FED_TOML = """\
analyst = "alice"
timeout_s = 30

[modes.paillier]
bits = 3072

[tls]
ca = "pki/ca.crt"
cert = "pki/alice.crt"
key = "pki/alice.key"
signing_key = "pki/alice.ed25519"

[[nodes]]
name = "water-north"
address = "127.0.0.1:50051"
"""
LOG_KEY = vkey(
    "datafed/ledger/water-north",
    1,
    raw_public_key(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)),
)
POLICY_TOML = f"""\
quorum = 0
logs = ["{LOG_KEY}"]
witnesses = []
[agencies]
water-north = "North District Water Office"
[budgets]
pipe_incidents = 5.0
"""
LOADERS: dict[str, tuple[str, Callable[[Path], Any], type[Exception]]] = {
    "node.toml": (NODE_TOML, load_node_config, ConfigError),
    "fed.toml": (FED_TOML, load_federation, ConfigError),
    "audit-policy.toml": (POLICY_TOML, Policy.load, ValueError),
}


def toml_value(value: Any) -> str:
    """A TOML literal for ``value`` (inline tables and arrays for nesting)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


scalars = st.one_of(
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(("alice", "plain", "paillier", "sum", "pki/ca.crt", "../../etc/passwd", "")),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def edited(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few lines replaced: a key's value by any value, or a line by junk."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        key, sep, _ = lines[i].partition(" = ")
        if sep and draw(st.integers(0, 3)):
            lines[i] = f"{key} = {toml_value(draw(values))}"
        elif draw(st.booleans()):
            lines[i] = draw(st.text(max_size=40).map(lambda s: s.replace("\n", " ")))
        else:
            del lines[i]
            if not lines:
                break
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("configs")


def _load(where: Path, name: str, text: str) -> None:
    _, load, error = LOADERS[name]
    path = where / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load(path)
    except error as exc:
        assert str(exc) and "Traceback" not in str(exc)


def test_the_valid_files_load(where: Path) -> None:
    """The oracle starts from files that load."""
    for name, (text, load, _) in LOADERS.items():
        (where / name).write_text(text)
        assert load(where / name) is not None


@fuzz(100)
@given(st.sampled_from(sorted(LOADERS)), st.data())
def test_edited_files(where: Path, name: str, data: st.DataObject) -> None:
    _load(where, name, data.draw(edited(LOADERS[name][0])))


@fuzz(60)
@given(st.sampled_from(sorted(LOADERS)), st.text(max_size=200))
def test_arbitrary_text(where: Path, name: str, text: str) -> None:
    _load(where, name, text)


@fuzz(60)
@given(
    st.sampled_from(sorted(LOADERS)),
    st.dictionaries(
        st.sampled_from(
            ("node", "tls", "datasets", "limits", "analyst", "nodes", "modes", "logs", "quorum")
        ),
        values,
        max_size=4,
    ),
)
def test_documents_of_any_shape(where: Path, name: str, doc: dict[str, Any]) -> None:
    _load(where, name, "".join(f"{k} = {toml_value(v)}\n" for k, v in doc.items()))
