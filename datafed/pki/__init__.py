"""The federation's PKI (docs/pki.md).

The CA, certificate requests, the register of issued certificates, revocation, mTLS
credentials and peer identities:

- :mod:`datafed.pki.ca` -- the federation CA and the certificates it issues (re-exported
  here: ``from datafed import pki; pki.issue(...)``);
- :mod:`datafed.pki.request` -- certificate signing requests that prove possession of both keys;
- :mod:`datafed.pki.registry` -- the CA's register of issued and revoked certificates, its CRL;
- :mod:`datafed.pki.crl` -- revocation at the node, checked on every request;
- :mod:`datafed.pki.tls` -- mTLS credentials for gRPC from a party's files;
- :mod:`datafed.pki.peers` -- verified peer identities and X25519 agreement from certificates.

Inside this package, modules import each other's submodules, never this facade.
"""

from __future__ import annotations

from datafed.pki.ca import (
    ROLES,
    SERVER_ROLES,
    SIGNING_KEY_OID,
    Identity,
    IssuedFiles,
    check_name,
    identity_from_pem,
    init_ca,
    issue,
    load_ca,
    load_signing_key,
    party_paths,
    request,
    sign,
    subject_names,
    write_private,
)

__all__ = [
    "ROLES",
    "SERVER_ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "IssuedFiles",
    "check_name",
    "identity_from_pem",
    "init_ca",
    "issue",
    "load_ca",
    "load_signing_key",
    "party_paths",
    "request",
    "sign",
    "subject_names",
    "write_private",
]
