"""The federation's PKI (docs/pki.md).

The CA, certificate requests, the register of issued certificates, revocation, mTLS
credentials and peer identities:

- :mod:`datafed.pki.ca` -- the federation CA and the certificates it issues (re-exported
  here: ``from datafed import pki; pki.issue(...)``);
- :mod:`datafed.pki.identity` -- what a certificate says: role, name, signing key;
- :mod:`datafed.pki.files` -- where a party's and the CA's key and certificate files live;
- :mod:`datafed.pki.csr` -- certificate signing requests that prove possession of both keys;
- :mod:`datafed.pki.registry` -- the CA's register of issued and revoked certificates, its CRL;
- :mod:`datafed.pki.crl` -- revocation at the node, checked on every request;
- :mod:`datafed.pki.tls` -- mTLS credentials for gRPC from a party's files;
- :mod:`datafed.pki.peers` -- verified peer identities and X25519 agreement from certificates.

Inside this package, modules import each other's submodules, never this facade.
"""

from __future__ import annotations

from datafed.pki import ca
from datafed.pki.ca import *  # noqa: F403 - the CA's public names (listed once, in ca.__all__)

__all__ = ca.__all__
