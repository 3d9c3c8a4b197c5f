"""``check-config``: everything ``serve`` would refuse, listed one line per problem.

Checks the TLS files (present, parseable, the certificate is this node's), the
certificates named by ``[witness]`` and ``[publish]``, and every dataset: that it opens,
that its policy names only columns it has, that group domains and DP bounds fit the
columns' types, and that every allowed column's stored values fit their type
(:mod:`nodes.stores.checks`).  Nothing is written; no server is started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from datafed.errors import DatafedError
from nodes.config import DatasetConfig, NodeConfig
from nodes.stores.base import DatasetStore

__all__ = ["preflight", "warnings"]


def _tls_problems(cfg: NodeConfig) -> list[str]:
    out = []
    files = {
        "tls.ca": cfg.tls.ca,
        "tls.cert": cfg.tls.cert,
        "tls.key": cfg.tls.key,
        "tls.signing_key": cfg.tls.signing_key,
    }
    for field, path in files.items():
        if not Path(path).is_file():
            out.append(f"{field}: file not found: {path}")
    if out:
        return out
    from cryptography.hazmat.primitives import serialization

    from datafed.pki.ca import load_signing_key
    from datafed.pki.tls import TlsMaterial

    try:
        tls = TlsMaterial.load(cfg.tls)
        if tls.identity.role != "node" or tls.identity.name != cfg.node.name:
            out.append(f"tls.cert is for {tls.identity}, but this node is node:{cfg.node.name}")
        raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        bound = tls.identity.signing_key.public_bytes(*raw)
        if load_signing_key(cfg.tls.signing_key).public_key().public_bytes(*raw) != bound:
            out.append(
                "tls.cert binds another Ed25519 key than tls.signing_key (the ledger's key): "
                "renew with `datafed-node renew request`"
            )
    except DatafedError as exc:
        out.append(f"tls: {exc}")
    if cfg.tls.crl is not None:
        out += _crl_problems(cfg)
    return out


def _crl_problems(cfg: NodeConfig) -> list[str]:
    """``tls.crl`` set: the file is there, signed by the CA and not expired (serve needs it)."""
    import datetime as dt

    from datafed.pki.crl import RevocationList

    assert cfg.tls.crl is not None
    if not Path(cfg.tls.crl).is_file():
        return [
            f"tls.crl: file not found: {cfg.tls.crl} (the federation operator publishes it "
            "with `datafed pki crl`; copy crl.pem here)"
        ]
    try:
        crl = RevocationList(Path(cfg.tls.crl), Path(cfg.tls.ca).read_bytes()).crl
    except DatafedError as exc:
        return [str(exc)]
    if crl.next_update_utc is not None and crl.next_update_utc < dt.datetime.now(dt.UTC):
        return [
            f"tls.crl: {cfg.tls.crl} expired at {crl.next_update_utc:%Y-%m-%d %H:%M}Z: the "
            "node would refuse everyone (publish a fresh one: `datafed pki crl`)"
        ]
    return []


def _peer_problems(cfg: NodeConfig) -> list[str]:
    out = []
    if cfg.witness is not None:
        for i, cert in enumerate(cfg.witness.peers):
            if not Path(cert).is_file():
                out.append(f"witness.peers.{i}: file not found: {cert}")
    if cfg.publish is not None:
        for i, w in enumerate(cfg.publish.witnesses):
            if not Path(w.cert).is_file():
                out.append(f"publish.witnesses.{i}.cert: file not found: {w.cert}")
    return out


def preflight(
    cfg: NodeConfig, stores: Mapping[str, DatasetStore] | None = None, *, values: bool = False
) -> list[str]:
    """Every problem ``serve`` would stop at, one line each (empty: ready to serve).

    ``check-config`` opens each dataset and shows stored values that do not fit
    (``values``); a serving node's ``reload`` passes the ``stores`` it has open (its
    dataset sources cannot change without a restart) and records no stored value.
    """
    from nodes.stores import open_dataset
    from nodes.stores.checks import problems

    out = _tls_problems(cfg) + _peer_problems(cfg)
    for ds in cfg.datasets:
        opened = stores.get(ds.name) if stores is not None else None
        try:
            store = opened or open_dataset(ds)
        except DatafedError as exc:
            out.append(
                str(exc) if str(exc).startswith("dataset ") else f"dataset {ds.name!r}: {exc}"
            )
            continue
        try:
            out += problems(ds, store, values=values)
        except DatafedError as exc:
            out.append(str(exc))
        finally:
            if opened is None:
                store.close()
    return out


def warnings(cfg: NodeConfig) -> list[str]:
    """What weakens this node's security or audit without stopping it, one line each.

    ``check-config`` prints them (``--strict``: they fail it); ``reload`` and ``serve``
    log them.  Each names the key to set (docs/operator.md).
    """
    out = []
    if cfg.tls.crl is None:
        out.append(
            "tls.crl is not set: a certificate revoked with `datafed pki revoke` is still "
            "accepted here (set tls.crl to the federation's crl.pem)"
        )
    if cfg.publish is None:
        out.append(
            "no [publish] witnesses: nobody cosigns this node's checkpoints, so an auditor's "
            "`verify` with a witness quorum refuses its log (quorum 0 proves nothing)"
        )
    if cfg.witness is None:
        out.append("no [witness] peers: this node cosigns no other node's log")
    out += _exposure_warnings(cfg)
    for ds in cfg.datasets:
        out += _dataset_warnings(ds)
    return out


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _exposure_warnings(cfg: NodeConfig) -> list[str]:
    """Plaintext ports beyond loopback, private keys others can read."""
    out = []
    listeners = (
        ("node.health_listen", cfg.node.health_listen),
        ("node.metrics_listen", cfg.node.metrics_listen),
    )
    for key, address in listeners:
        if address and not _loopback(address):
            out.append(
                f"{key} = {address!r} is plaintext and reachable beyond this host "
                "(bind it to 127.0.0.1 or firewall it)"
            )
    for key, path in (("tls.key", cfg.tls.key), ("tls.signing_key", cfg.tls.signing_key)):
        try:
            mode = Path(path).stat().st_mode
        except OSError:
            continue  # a missing file is a problem, listed by preflight
        if mode & 0o077:
            out.append(f"{key}: {path} is readable by other users (chmod 600 it)")
    return out


def _dataset_warnings(ds: DatasetConfig) -> list[str]:
    """Policies that release more than their authors may think."""
    out = []
    where = f"dataset {ds.name!r}"
    if ds.url and "@" in ds.url and ":" in ds.url.split("@", 1)[0].split("//", 1)[-1]:
        out.append(f"{where}: url holds a password (use password_env or password_file)")
    dp = ds.policy.dp
    if dp is None:
        return out
    if dp.budget_scope == "requester":
        out.append(
            f"{where}: dp.budget_scope = 'requester': colluding analysts add up their budgets"
        )
    if dp.epsilon_per_query > 1:
        out.append(
            f"{where}: dp.epsilon_per_query = {dp.epsilon_per_query} is above 1 (weak noise)"
        )
    return out
