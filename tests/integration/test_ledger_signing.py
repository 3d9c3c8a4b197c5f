"""Every entry signed soon, at a real node (issue 9 #7).

A running ``datafed-node serve`` with ``sign_within_s`` in its node.toml records a denial
for a malformed request; nobody asks it for a checkpoint, yet a signed checkpoint covering
the denial appears in its ledger (read offline, read-only, as ``datafed-audit export --db``
would), and the export verifies with no unsigned tail.  Then the operator drops the
denial from the export: the signed size gives it away.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from audit.checkpoint import Checkpoint, log_verifier
from audit.export import ExportDir, export_store
from audit.note import parse_note
from audit.policy import Policy
from audit.records import DataUseRecord, decode_leaf
from audit.remote import mtls_channel
from audit.verify import verify_log
from audit.vkeys import public_key_of
from datafed import pki
from datafed.local.federation import LocalFederation, water_district_specs
from datafed.proto.v1 import common_pb2, query_pb2_grpc


def latest_signed(db: Path, out: Path) -> tuple[int, int]:
    """Export the ledger read-only; return (entries, size of the newest checkpoint)."""
    exp = ExportDir(export_store(db, out))
    notes = exp.checkpoint_notes()
    size = max((Checkpoint.parse(parse_note(n)[0]).size for _, n in notes), default=0)
    return exp.count(), size


def test_a_denial_is_signed_without_being_asked(tmp_path: Path) -> None:
    spec = water_district_specs(segments=20)[0]
    fed = LocalFederation.create(tmp_path / "fed", [spec])
    node = fed.nodes[0]
    node.config.write_text(
        node.config.read_text().replace(
            'state_dir = "state"', 'state_dir = "state"\nsign_within_s = 0.3'
        )
    )
    db = node.config.parent / "state" / "ledger.sqlite"
    with fed:
        fed.start()
        files = pki.party_paths(fed.pki_dir, "analyst", "alice")

        async def junk() -> grpc.StatusCode:
            ca = fed.pki_dir / "ca.crt"
            async with mtls_channel(node.address, ca, files.cert, files.key, spec.name) as ch:
                stub = query_pb2_grpc.QueryServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.Query(common_pb2.SignedRequest(body=b"junk", signature=b"x"))
                return e.value.code()

        assert asyncio.run(junk()) != grpc.StatusCode.OK  # refused, and recorded as denied
        deadline, k = time.monotonic() + 20, 0
        while True:
            k += 1
            entries, signed = latest_signed(db, tmp_path / f"exp{k}")
            if (entries > 0 and signed == entries) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert entries > 0 and signed == entries, (entries, signed)
    cert = pki.party_paths(fed.pki_dir, "node", spec.name).cert
    found = public_key_of(cert.read_bytes(), cert.name, ca=fed.pki_dir / "ca.crt")
    assert found.name is not None
    policy = Policy({found.name: log_verifier(found.name, found.key)})
    report = verify_log(ExportDir(tmp_path / f"exp{k}"), policy, deep=True)
    assert report.ok and report.entries == entries, report.findings
    denied = [r for r in _records(tmp_path / f"exp{k}") if r.decision == "denied"]
    assert denied, "the malformed request was not recorded"
    # the operator drops the last entry (the denial) from its export: detected
    exp = tmp_path / f"exp{k}"
    leaves = ExportDir(exp).leaves()[:-1]
    (exp / "entries.bin").write_bytes(b"".join(len(x).to_bytes(4, "big") + x for x in leaves))
    (exp / "hashes.bin").write_bytes((exp / "hashes.bin").read_bytes()[: 32 * len(leaves)])
    codes = {f.code for f in verify_log(ExportDir(exp), policy).findings}
    assert "log-truncated" in codes


def _records(path: Path) -> list[DataUseRecord]:
    return [decode_leaf(x)[1] for x in ExportDir(path).leaves()]
