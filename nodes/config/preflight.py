"""``check-config``: everything ``serve`` would refuse, listed one line per problem.

Checks the TLS files (present, parseable, the certificate is this node's), the
certificates named by ``[witness]`` and ``[publish]``, and every dataset: that it opens,
that its policy names only columns it has, that group domains and DP bounds fit the
columns' types, and that every allowed column's stored values fit their type
(:mod:`nodes.stores.checks`).  Nothing is written; no server is started.
"""

from __future__ import annotations

from pathlib import Path

from datafed.errors import DatafedError
from nodes.config import NodeConfig

__all__ = ["preflight"]


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
    from datafed.pki.ca import load_signing_key
    from datafed.pki.tls import TlsMaterial

    try:
        tls = TlsMaterial.load(cfg.tls)
        if tls.identity.role != "node" or tls.identity.name != cfg.node.name:
            out.append(f"tls.cert is for {tls.identity}, but this node is node:{cfg.node.name}")
        load_signing_key(cfg.tls.signing_key)
    except DatafedError as exc:
        out.append(f"tls: {exc}")
    return out


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


def preflight(cfg: NodeConfig) -> list[str]:
    """Every problem ``serve`` would stop at, one line each (empty: ready to serve)."""
    from nodes.stores import open_dataset
    from nodes.stores.checks import problems

    out = _tls_problems(cfg) + _peer_problems(cfg)
    for ds in cfg.datasets:
        try:
            store = open_dataset(ds)
        except DatafedError as exc:
            out.append(
                str(exc) if str(exc).startswith("dataset ") else f"dataset {ds.name!r}: {exc}"
            )
            continue
        try:
            out += problems(ds, store)
        except DatafedError as exc:
            out.append(str(exc))
        finally:
            store.close()
    return out
