"""The auditor's policy file (TOML): the pinned logs, witnesses and quorum it trusts.

Trust anchors come only from here, never from the data under check::

    # datafed-audit policy
    quorum = 1                                    # witnesses that must cosign (k of n)
    logs = ["datafed/ledger/water-north+1a2b3c4d+AQ..."]       # log keys (type 0x01)
    witnesses = ["datafed/witness/regulator+5e6f7a8b+BA..."]   # cosigner keys (type 0x04)
    state = "audit-state.json"   # optional: last verified size/root per log (rollback check)

    [witness_addresses]          # optional: where ``verify --node`` asks each witness (mTLS)
    "datafed/witness/regulator" = "10.0.0.9:50051"

    [agencies]                   # optional: the city's names for the nodes, for reports
    water-north = "Water Department (north)"

    [budgets]                    # optional: agreed epsilon per dataset, for reports
    "water-north/pipe_incidents" = 2.0           # one node's dataset
    pipe_incidents = 3.0                         # that dataset name at any node

Keys are C2SP verifier keys (``name+keyid+base64(type || key)``); a log's key name is its
origin.  ``datafed-audit vkey`` prints them from a node's certificate (or key file).

A quorum of 0 means no witness vouches for the logs: their operators could rewrite them
undetectably.  :meth:`Policy.require_witnesses` refuses such a policy unless the auditor
says so explicitly (``--no-witnesses``), see docs/audit.md.  With a quorum, ``verify`` also
asks the witnesses for their newest cosigned checkpoint of the log (online at
``witness_addresses``, the TLS name being the last part of the witness's name, or from
exported witness state files; :mod:`audit.witness_state`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from audit.note import SIG_COSIGNATURE_V1, SIG_ED25519, Verifier, parse_vkey

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Policy", "PolicyFile"]


class PolicyFile(BaseModel):
    """The auditor's policy file: pinned logs and witnesses, the quorum, report labels."""

    model_config = ConfigDict(extra="forbid")

    #: Log keys to pin, one per node (C2SP verifier keys of type 0x01, from
    #: ``datafed-audit vkey NODE.crt``); a log's key name is its origin.
    logs: list[str] = Field(min_length=1)
    #: Witness cosigning keys (type 0x04, ``datafed-audit vkey --witness``).
    witnesses: list[str] = []
    #: How many of ``witnesses`` must have cosigned a checkpoint (k of n); 0 is refused
    #: unless ``--no-witnesses`` (then an operator could rewrite its log undetectably).
    quorum: int = Field(default=0, ge=0)
    #: File of the last verified size and root of each log (rollback and rewrite check).
    state: str | None = None
    #: ``host:port`` of pinned witnesses, by witness name: ``verify --node`` asks them for
    #: their newest cosigned checkpoint of the log (TLS name: the name's last part).
    witness_addresses: dict[str, str] = {}
    #: The city's names for the nodes, used in reports (``water-north = "..."``).
    agencies: dict[str, str] = {}
    #: Agreed epsilon per dataset, for reports: ``"node/dataset"`` or ``"dataset"``.
    budgets: dict[str, float] = {}


_KEYS = set(PolicyFile.model_fields)


@dataclass(frozen=True)
class Policy:
    """Pinned ``logs`` (origin -> key), ``witnesses``, ``quorum`` and ``state`` path.

    ``agencies`` (node -> name) and ``budgets`` (dataset -> epsilon) label reports;
    ``witness_addresses`` (witness name -> ``host:port``) are where witnesses are asked.
    """

    logs: dict[str, Verifier]
    witnesses: tuple[Verifier, ...] = ()
    quorum: int = 0
    state: Path | None = None
    agencies: dict[str, str] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    witness_addresses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.quorum <= len(self.witnesses):
            raise ValueError(
                f"policy: quorum must be between 0 and the {len(self.witnesses)} witnesses, "
                f"got {self.quorum}"
            )
        names = {w.name for w in self.witnesses}
        for name, address in self.witness_addresses.items():
            if name not in names:
                raise ValueError(f"policy: witness_addresses names {name!r}, not a pinned witness")
            host, sep, port = address.rpartition(":")
            if not host or not sep or not port.isdigit():
                raise ValueError(f"policy: witness_addresses.{name} must be host:port")

    def require_witnesses(self, no_witnesses: bool) -> None:
        """Refuse a policy without a witness quorum unless ``no_witnesses`` accepts it.

        Raises
        ------
        ValueError
            One line saying why, when the quorum is 0 and ``no_witnesses`` is False.
        """
        if self.quorum == 0 and not no_witnesses:
            raise ValueError(
                "policy has witness quorum 0: an operator could rewrite its log undetectably; "
                "pin witnesses and a quorum, or pass --no-witnesses to accept that"
            )

    def budget(self, node: str, dataset: str) -> float | None:
        """The agreed epsilon budget of ``dataset`` at ``node``, if the policy names one."""
        return self.budgets.get(f"{node}/{dataset}", self.budgets.get(dataset))

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
        agencies = _table(data, "agencies", str)
        budgets = _table(data, "budgets", float)
        if not all(math.isfinite(b) and b >= 0 for b in budgets.values()):
            raise ValueError("policy: budgets must be finite numbers >= 0")
        addresses = _table(data, "witness_addresses", str)
        return cls(by_origin, tuple(witnesses), quorum, state_path, agencies, budgets, addresses)


def _table(data: dict[str, Any], name: str, kind: type) -> dict[str, Any]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ValueError(f"policy: {name} must be a table")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        ok = isinstance(v, str) if kind is str else isinstance(v, (int, float))
        if not ok or isinstance(v, bool):
            raise ValueError(
                f"policy: {name}.{k} must be a {'string' if kind is str else 'number'}"
            )
        out[str(k)] = kind(v)
    return out


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
