"""mTLS credentials for gRPC from a party's PKI files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import grpc
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from datafed.config.load import resolve_path
from datafed.errors import PkiError
from datafed.pki.identity import Identity, identity_from_pem
from datafed.pki.trust import PartnerBundle

__all__ = [
    "PartyFiles",
    "TlsMaterial",
    "channel_credentials",
    "server_credentials",
    "with_partners",
]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    ctx: dict[str, Any] = info.context or {}
    return resolve_path(value, ctx.get("base_dir"))


ResolvedPath = Annotated[Path, AfterValidator(_resolve)]


class PartyFiles(BaseModel):
    """Where a party's CA certificate, certificate, TLS key and signing key live."""

    model_config = ConfigDict(extra="forbid")

    #: The federation CA certificate (``ca.crt``): the only CA this party trusts.
    ca: ResolvedPath
    #: This party's certificate, issued by the federation CA.
    cert: ResolvedPath
    #: The certificate's TLS private key (ECDSA P-256, PEM).
    key: ResolvedPath
    #: The Ed25519 signing key bound into the certificate (PEM).
    signing_key: ResolvedPath


@dataclass(frozen=True)
class TlsMaterial:
    """Loaded PEM bytes and the identity the certificate speaks for."""

    ca: bytes
    cert: bytes
    key: bytes
    identity: Identity

    @classmethod
    def load(cls, files: PartyFiles) -> TlsMaterial:
        """Read the files; raise :class:`PkiError` naming a missing one."""
        data: dict[str, bytes] = {}
        for name in ("ca", "cert", "key"):
            path: Path = getattr(files, name)
            try:
                data[name] = path.read_bytes()
            except FileNotFoundError as exc:
                raise PkiError(f"tls.{name}: file not found: {path}") from exc
        return cls(identity=identity_from_pem(data["cert"]), **data)


def with_partners(tls: TlsMaterial, bundles: Sequence[Path]) -> TlsMaterial:
    """``tls`` trusting also the partner federations of ``bundles`` (docs/federation.md).

    Raises
    ------
    PkiError
        A bundle that cannot be read or recognised (see
        :meth:`datafed.pki.trust.PartnerBundle.check`).
    """
    extra = b""
    for path in bundles:
        bundle = PartnerBundle.read(path).check(tls.identity.federation)
        extra += bundle.ca_pem
    return dataclasses.replace(tls, ca=tls.ca + extra) if extra else tls


def server_credentials(tls: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from the federation CA."""
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )


def channel_credentials(tls: TlsMaterial) -> grpc.ChannelCredentials:
    """Client credentials presenting the party's certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
