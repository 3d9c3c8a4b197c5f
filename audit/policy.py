"""The auditor's policy file (TOML): the pinned logs, witnesses and quorum it trusts.

Trust anchors come only from here, never from the data under check::

    # datafed-audit policy
    quorum = 1                                    # witnesses that must cosign (k of n)
    logs = ["datafed/ledger/water-north+1a2b3c4d+AQ..."]       # log keys (type 0x01)
    witnesses = ["datafed/witness/regulator+5e6f7a8b+BA..."]   # cosigner keys (type 0x04)
    state = "audit-state.json"   # optional: last verified size/root per log (rollback check)

Keys are C2SP verifier keys (``name+keyid+base64(type || key)``); a log's key name is its
origin.  ``datafed-audit vkey`` prints them from key files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.note import SIG_COSIGNATURE_V1, SIG_ED25519, Verifier, parse_vkey

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Policy"]

_KEYS = {"quorum", "logs", "witnesses", "state"}


@dataclass(frozen=True)
class Policy:
    """Pinned ``logs`` (origin -> key), ``witnesses``, ``quorum`` and optional ``state`` path."""

    logs: dict[str, Verifier]
    witnesses: tuple[Verifier, ...] = ()
    quorum: int = 0
    state: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.quorum <= len(self.witnesses):
            raise ValueError(
                f"policy: quorum must be between 0 and the {len(self.witnesses)} witnesses, "
                f"got {self.quorum}"
            )

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Read and validate a policy file; raise ValueError naming the bad field."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"policy file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"policy file {Path(path).name} is not valid TOML: {exc}") from None
        return cls.from_dict(data, base=Path(path).resolve().parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> Policy:
        """Build a policy from parsed TOML (relative ``state`` resolves against ``base``)."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ValueError(f"policy: unknown field {unknown[0]!r}")
        logs = _keys(data, "logs", SIG_ED25519)
        if not logs:
            raise ValueError("policy: logs must pin at least one log key")
        witnesses = _keys(data, "witnesses", SIG_COSIGNATURE_V1)
        quorum = data.get("quorum", 0)
        if isinstance(quorum, bool) or not isinstance(quorum, int):
            raise ValueError(f"policy: quorum must be an integer, got {quorum!r}")
        state = data.get("state")
        if state is not None and not isinstance(state, str):
            raise ValueError("policy: state must be a path string")
        state_path = None if state is None else (base or Path.cwd()) / state
        by_origin = {v.name: v for v in logs}
        if len(by_origin) != len(logs):
            raise ValueError("policy: logs pins one origin twice")
        return cls(by_origin, tuple(witnesses), quorum, state_path)


def _keys(data: dict[str, Any], field: str, sig_type: int) -> list[Verifier]:
    raw = data.get(field, [])
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"policy: {field} must be a list of verifier keys")
    out = []
    for i, text in enumerate(raw):
        try:
            v = parse_vkey(text)
        except ValueError as exc:
            raise ValueError(f"policy: {field}[{i}]: {exc}") from None
        if v.type != sig_type:
            raise ValueError(f"policy: {field}[{i}] must be a type 0x{sig_type:02x} key")
        out.append(v)
    return out
