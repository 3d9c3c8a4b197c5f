"""LedgerService over real gRPC with mTLS on 127.0.0.1: a node, a witness node, an auditor."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger, WitnessRefusal
from audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint, witness_verifier
from audit.cli.app import main as audit_main
from audit.private import decode_opening
from audit.remote import LedgerClient, RemoteError, mtls_channel, request_cosignature
from audit.witness import WitnessStore
from datafed import pki
from datafed.proto.v1 import ledger_pb2, ledger_pb2_grpc
from nodes.ledger.servicer import add_ledger_services
from tests.unit.audit.conftest import make_record

ORIGIN = "datafed/ledger/water-north"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x31" * 32)
W_KEY = Ed25519PrivateKey.from_private_bytes(b"\x32" * 32)


@dataclass
class Site:
    pki: Path
    ca: Path
    node_addr: str
    witness_addr: str
    ledger: Ledger
    witness: WitnessStore

    def creds(self, role: str, name: str) -> tuple[Path, Path, Path]:
        files = pki.party_paths(self.pki, role, name)
        return self.ca, files.cert, files.key

    def channel(self, role: str, name: str, addr: str, server: str) -> grpc.aio.Channel:
        ca, cert, key = self.creds(role, name)
        return mtls_channel(addr, ca, cert, key, server)


async def _serve(
    ledger: Ledger, witness: WitnessStore | None, pki_dir: Path, name: str
) -> tuple[grpc.aio.Server, str]:
    files = pki.party_paths(pki_dir, "node", name)
    creds = grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=(pki_dir / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    server = grpc.aio.server()
    add_ledger_services(server, ledger, witness)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    d = tmp_path / "pki"
    ca = pki.init_ca(d)
    for role, name in [
        ("node", "water-north"),
        ("node", "regulator"),
        ("auditor", "audrey"),
        ("analyst", "alice"),
        ("witness", "wendy"),
    ]:
        pki.issue(d, role, name)
    ledger = Ledger.open(tmp_path / "ledger.db", ORIGIN, LOG_KEY)
    ledger.append_many([make_record(i) for i in range(25)])
    witness = WitnessStore(tmp_path / "w.db", "datafed/witness/regulator", W_KEY, [ledger.verifier])
    node_srv, node_addr = await _serve(ledger, None, d, "water-north")
    own = Ledger.open(tmp_path / "reg.db", "datafed/ledger/regulator", W_KEY)
    w_srv, w_addr = await _serve(own, witness, d, "regulator")
    yield Site(d, ca, node_addr, w_addr, ledger, witness)
    await node_srv.stop(None)
    await w_srv.stop(None)
    ledger.close()
    own.close()
    witness.close()


async def test_witnessing_over_grpc(site: Site) -> None:
    async with site.channel("node", "water-north", site.witness_addr, "regulator") as ch:
        client = LedgerClient(ch)
        note = await request_cosignature(site.ledger, client, site.witness.verifier)
        assert open_checkpoint(note, site.ledger.verifier).cosigners([site.witness.verifier])
        site.ledger.append_many([make_record(i) for i in range(25, 40)])
        note = await request_cosignature(site.ledger, client, site.witness.verifier)
        assert open_checkpoint(note, site.ledger.verifier).checkpoint.size == 40
        # a forked checkpoint of the same size is refused with the witness's size
        fork = sign_checkpoint(Checkpoint(ORIGIN, 40, b"\x05" * 32), LOG_KEY)
        with pytest.raises(WitnessRefusal) as e:
            await client.add_checkpoint(fork, 40, [])
        assert (e.value.reason, e.value.witness_size) == ("fork", 40)
        with pytest.raises(WitnessRefusal) as e:
            await client.add_checkpoint(site.ledger.checkpoint(), 3, [])
        assert (e.value.reason, e.value.witness_size) == ("conflict", 40)
    assert len(site.witness.evidence()) == 1


async def test_reads_and_proofs(site: Site) -> None:
    async with site.channel("auditor", "audrey", site.node_addr, "water-north") as ch:
        client = LedgerClient(ch)
        note = await client.checkpoint()
        cp = open_checkpoint(note, site.ledger.verifier).checkpoint
        assert cp.size == 25
        assert await client.entries(0, 25) == site.ledger.leaves(0, 25)
        assert await client.inclusion_proof(3, 25) == site.ledger.inclusion_proof(3, 25)
        assert await client.consistency_proof(10, 25) == site.ledger.consistency_proof(10, 25)


@pytest.mark.parametrize(
    ("method", "request_msg"),
    [
        ("GetEntries", ledger_pb2.GetEntriesRequest(start=5, end=5)),
        ("GetEntries", ledger_pb2.GetEntriesRequest(start=0, end=26)),
        ("GetEntries", ledger_pb2.GetEntriesRequest(start=0, end=2000)),
        ("GetInclusionProof", ledger_pb2.GetInclusionProofRequest(index=25)),
        ("GetInclusionProof", ledger_pb2.GetInclusionProofRequest(index=1, tree_size=99)),
        ("GetConsistencyProof", ledger_pb2.GetConsistencyProofRequest(size1=0)),
        ("GetConsistencyProof", ledger_pb2.GetConsistencyProofRequest(size1=30, size2=20)),
    ],
)
async def test_bad_reads_are_invalid_argument(site: Site, method: str, request_msg: object) -> None:
    async with site.channel("auditor", "audrey", site.node_addr, "water-north") as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await getattr(stub, method)(request_msg, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "request_msg",
    [
        ledger_pb2.AddCheckpointRequest(checkpoint=b"garbage"),
        ledger_pb2.AddCheckpointRequest(checkpoint=b"\xff\xfe"),
        ledger_pb2.AddCheckpointRequest(old_size=0, consistency_proof=[b"short"]),
        ledger_pb2.AddCheckpointRequest(old_size=0, consistency_proof=[b"x" * 32] * 200),
    ],
)
async def test_bad_witness_input_writes_nothing(site: Site, request_msg: object) -> None:
    async with site.channel("node", "water-north", site.witness_addr, "regulator") as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.AddCheckpoint(request_msg, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert site.witness.latest(ORIGIN) is None and site.witness.evidence() == []


async def test_forged_checkpoint_refused_by_witness(site: Site) -> None:
    note = site.ledger.checkpoint().replace("\n25\n", "\n26\n")
    async with site.channel("node", "water-north", site.witness_addr, "regulator") as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.AddCheckpoint(ledger_pb2.AddCheckpointRequest(checkpoint=note.encode()))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert site.witness.latest(ORIGIN) is None


async def test_roles_are_checked(site: Site) -> None:
    async with site.channel("analyst", "alice", site.node_addr, "water-north") as ch:
        client = LedgerClient(ch)
        assert (await client.checkpoint()).startswith(ORIGIN)
        with pytest.raises(RemoteError, match="PERMISSION_DENIED"):
            await client.entries(0, 5)
    async with site.channel("auditor", "audrey", site.node_addr, "water-north") as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.AddCheckpoint(ledger_pb2.AddCheckpointRequest())
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with site.channel("node", "water-north", site.node_addr, "water-north") as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.AddCheckpoint(ledger_pb2.AddCheckpointRequest())
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_entries_only_for_auditors_and_witnesses(site: Site) -> None:
    """Issue 9 #6: a node certificate (any other agency) may not read this node's entries."""
    opened = site.ledger.append(make_record(25), private={"groups_suppressed": "2"})
    async with site.channel("node", "regulator", site.node_addr, "water-north") as ch:
        client = LedgerClient(ch)
        with pytest.raises(RemoteError, match="PERMISSION_DENIED: role node may not call"):
            await client.entries(0, 5)
        # checkpoints and proofs stay open to nodes (witnessing, receipts)
        cp = open_checkpoint(await client.checkpoint(), site.ledger.verifier).checkpoint
        assert await client.inclusion_proof(3, cp.size) == site.ledger.inclusion_proof(3, cp.size)
    for role, name in (("auditor", "audrey"), ("witness", "wendy")):
        async with site.channel(role, name, site.node_addr, "water-north") as ch:
            leaves, private = await LedgerClient(ch).entries_with_private(0, 26)
        assert leaves == site.ledger.leaves(0, 26)
        assert private == site.ledger.private_parts(0, 26) and list(private) == [opened]
        assert decode_opening(private[opened])[1] == {"groups_suppressed": "2"}


def _cli(argv: list[str]) -> int:
    old = sys.argv
    sys.argv = ["datafed-audit", *argv]
    try:
        audit_main()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old


async def test_auditor_cli_online(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'logs = ["{site.ledger.verifier.vkey()}"]\n')
    ca, cert, key = site.creds("auditor", "audrey")
    tls = ["--ca", str(ca), "--cert", str(cert), "--key", str(key), "--server-name", "water-north"]
    node = ["--node", site.node_addr, *tls]
    code = await asyncio.to_thread(_cli, ["verify", "-p", str(policy), *node])
    assert code == 2 and "witness quorum 0" in capsys.readouterr().err  # no witness pinned
    code = await asyncio.to_thread(_cli, ["verify", "-p", str(policy), "--no-witnesses", *node])
    assert code == 0 and "OK datafed/ledger/water-north: 25 entries" in capsys.readouterr().out
    code = await asyncio.to_thread(_cli, ["prove", "--index", "7", "-p", str(policy), *node])
    assert code == 0 and "OK entry 7 is included" in capsys.readouterr().out
    code = await asyncio.to_thread(_cli, ["export", str(tmp_path / "exp"), *node])
    assert code == 0 and (tmp_path / "exp" / "entries.bin").exists()
    code = await asyncio.to_thread(
        _cli, ["verify", str(tmp_path / "exp"), "-p", str(policy), "--no-witnesses"]
    )
    assert code == 0
    bad_tls = ["--ca", str(ca), "--cert", str(cert), "--key", str(ca)]
    code = await asyncio.to_thread(
        _cli, ["verify", "-p", str(policy), "--no-witnesses", "--node", site.node_addr, *bad_tls]
    )
    assert code == 2


async def test_witnessed_checkpoints_over_grpc(site: Site) -> None:
    """A witness serves the newest checkpoint it cosigned of each log, with its cosignature."""
    async with site.channel("node", "water-north", site.witness_addr, "regulator") as ch:
        await request_cosignature(site.ledger, LedgerClient(ch), site.witness.verifier)
    for role, name in (("auditor", "audrey"), ("node", "water-north"), ("witness", "wendy")):
        async with site.channel(role, name, site.witness_addr, "regulator") as ch:
            notes = await LedgerClient(ch).witnessed()
            assert await LedgerClient(ch).witnessed(["datafed/ledger/other"]) == {}
        opened = open_checkpoint(notes[ORIGIN], site.ledger.verifier)
        assert list(notes) == [ORIGIN] and opened.checkpoint.size == 25
        assert opened.cosigners([site.witness.verifier]) == {site.witness.name}
    async with site.channel("analyst", "alice", site.witness_addr, "regulator") as ch:
        with pytest.raises(RemoteError, match="PERMISSION_DENIED"):
            await LedgerClient(ch).witnessed()
    async with site.channel("auditor", "audrey", site.node_addr, "water-north") as ch:
        with pytest.raises(RemoteError, match="UNIMPLEMENTED: this node is not a witness"):
            await LedgerClient(ch).witnessed()
    async with site.channel("auditor", "audrey", site.witness_addr, "regulator") as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        for origins in (["o"] * 101, ["o" * 1025]):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                req = ledger_pb2.GetWitnessedCheckpointsRequest(origins=origins)
                await stub.GetWitnessedCheckpoints(req, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_verify_online_asks_the_witnesses(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``verify --node`` asks each witness at its policy address; one that does not answer is
    reported and counts against the quorum."""
    async with site.channel("node", "water-north", site.witness_addr, "regulator") as ch:
        await request_cosignature(site.ledger, LedgerClient(ch), site.witness.verifier)
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{s.getsockname()[1]}"
    other = witness_verifier("datafed/witness/other", Ed25519PrivateKey.generate())
    ca, cert, key = site.creds("auditor", "audrey")
    tls = ["--ca", str(ca), "--cert", str(cert), "--key", str(key), "--server-name", "water-north"]
    node = ["--node", site.node_addr, *tls]
    for quorum in (1, 2):
        policy = tmp_path / f"policy{quorum}.toml"
        policy.write_text(
            f'quorum = {quorum}\nlogs = ["{site.ledger.verifier.vkey()}"]\n'
            f'witnesses = ["{site.witness.verifier.vkey()}", "{other.vkey()}"]\n'
            "[witness_addresses]\n"
            f'"{site.witness.name}" = "{site.witness_addr}"\n"{other.name}" = "{down}"\n'
        )
        code = await asyncio.to_thread(_cli, ["verify", "-p", str(policy), *node])
        out, err = capsys.readouterr()
        assert "witnesses consulted: 1 of 2 hold a cosigned checkpoint of this log" in out, out
        assert f"  {site.witness.name}: size 25, cosigned " in out
        assert f"  datafed/witness/other ({down}: unreachable or refused: " in out
        if quorum == 1:
            assert code == 0 and f"warning: witness datafed/witness/other ({down}" in err, err
        else:
            assert code == 1 and "FAIL witness-unavailable: 1 of 2 witnesses hold" in out, out
