"""A real ``datafed-node serve`` process as operators and orchestrators meet it.

Two nodes (their own CA, analysts alice and bob); the first with ``node.health_listen`` and ``tls.crl``
set: health answers without a certificate on its own plaintext port and nothing else
does; reflection over mTLS lists every service; a certificate revoked with
``datafed pki revoke`` is refused on the next request and the refusal is in the ledger.
A node that dies of a signal leaves each thread's stack in its log (faulthandler).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from audit.export import ExportDir, export_store
from audit.records import decode_leaf
from datafed import pki
from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.fl.superlink import free_port
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.pki.registry import publish_crl
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.query.sql import parse_sql
from datafed.wire.serde import header_to_proto, spec_to_proto
from datafed.wire.signing import new_header, sign_body
from nodes.server import SERVICE_NAMES

BIN = Path(sys.executable).parent
SQL = "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents"
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    # Two districts (a query names at least min_participants = 2 nodes); node 0 is the one
    # with the health port and the revocation list.
    specs = [
        replace(
            spec,
            policy_toml=spec.policy_toml.replace('["alice"]', '["alice", "bob"]').replace(
                "min_group_size = 3\n", "min_group_size = 3\nmin_participants = 2\n"
            ),
        )
        for spec in water_district_specs()[:2]
    ]
    fed = LocalFederation.create(
        tmp_path_factory.mktemp("operator"), specs, analysts=("alice", "bob")
    )
    node = fed.nodes[0]
    crl = node.config.parent / "crl.pem"  # the node's copy of what the operator publishes
    shutil.copy(publish_crl(fed.pki_dir), crl)
    fed.health_port = free_port()  # type: ignore[attr-defined]
    text = node.config.read_text()
    text = text.replace("[node]\n", f'[node]\nhealth_listen = "127.0.0.1:{fed.health_port}"\n')  # type: ignore[attr-defined]
    node.config.write_text(text.replace("[tls]\n", f'[tls]\ncrl = "{crl}"\n'))
    fed.start()
    fed.write_fed_toml("bob")
    try:
        yield fed
    finally:
        codes = fed.stop()
        assert all(c == 0 for c in codes), f"node exited with {codes}"


def mtls_channel(fed: LocalFederation, name: str = "alice") -> grpc.Channel:
    files = pki.party_paths(fed.pki_dir, "analyst", name)
    creds = grpc.ssl_channel_credentials(
        (fed.pki_dir / "ca.crt").read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )
    node = fed.nodes[0]
    return grpc.secure_channel(
        node.address, creds, options=[("grpc.ssl_target_name_override", node.spec.name)]
    )


def test_health_answers_without_a_certificate_on_its_own_port_only(fed):
    with grpc.insecure_channel(f"127.0.0.1:{fed.health_port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", *SERVICE_NAMES):
            got = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert got.status == SERVING, service
        with pytest.raises(grpc.RpcError) as refused:  # no data service on that port
            query_pb2_grpc.QueryServiceStub(ch).NodeInfo(query_pb2.NodeInfoRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(fed.nodes[0].address) as ch:  # the main port stays mTLS-only
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_reflection_lists_every_service_the_node_serves(fed):
    with mtls_channel(fed) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    listed = {s.name for s in reply.list_services_response.service}
    assert listed == {
        "datafed.proto.v1.QueryService", "datafed.proto.v1.LedgerService", "datafed.proto.v1.CollectService", "datafed.proto.v1.ProtocolService",
        "datafed.proto.v1.PsiService", "datafed.proto.v1.TrainingService", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }  # fmt: skip
    assert set(SERVICE_NAMES) < listed


def signed_query(fed: LocalFederation, requester: str) -> common_pb2.SignedRequest:
    """A well-formed query signed with ``requester``'s own key (the client's own bytes)."""
    header = new_header(requester, fed.nodes[0].spec.name, "job-revoked", PURPOSE)
    body = query_pb2.QueryRequestBody(
        header=header_to_proto(header),
        spec=spec_to_proto(parse_sql(SQL)),
        protection=query_pb2.Protection(mode="plain", fixed_point_bits=16),
    ).SerializeToString()
    key = pki.load_signing_key(pki.party_paths(fed.pki_dir, "analyst", requester).signing_key)
    return common_pb2.SignedRequest(body=body, signature=sign_body(body, key))


def node_records(fed: LocalFederation, out: Path):
    db = fed.nodes[0].config.parent / "state" / "ledger.sqlite"
    exp = ExportDir(export_store(db, out))
    return [decode_leaf(leaf)[1] for chunk in exp.leaf_chunks(4096) for leaf in chunk]


def test_a_revoked_analyst_is_refused_on_the_next_request_and_it_is_recorded(fed, tmp_path):
    alice = Federation.from_file(fed.fed_toml)
    bob = Federation.from_file(fed.root / "fed-bob.toml")
    assert bob.query(SQL, purpose=PURPOSE, protection="plain").rows
    node_crl = fed.nodes[0].config.parent / "crl.pem"
    saved = tmp_path / "crl-before.pem"
    shutil.copy(node_crl, saved)
    done = subprocess.run(
        [str(BIN / "datafed"), "pki", "revoke", "bob", "--dir", str(fed.pki_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "revoked bob: serial(s)" in done.stdout, done.stderr
    shutil.copy(fed.pki_dir / "crl.pem", node_crl)  # the operator distributes the new list
    # the node re-reads its tls.crl on the next request: no restart
    with pytest.raises(RemoteError) as refused:
        bob.query(SQL, purpose=PURPOSE, protection="plain")
    assert refused.value.code == "UNAUTHENTICATED" and "has been revoked" in refused.value.message
    with mtls_channel(fed, "bob") as ch, pytest.raises(grpc.RpcError) as raw:
        query_pb2_grpc.QueryServiceStub(ch).Query(signed_query(fed, "bob"), timeout=10)
    assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
    last = node_records(fed, tmp_path / "export")[-1]
    assert (last.decision, last.requester, last.operation) == ("denied", "unauthenticated", "query")
    assert last.reason.startswith("UNAUTHENTICATED: certificate") and "revoked" in last.reason
    assert alice.query(SQL, purpose=PURPOSE, protection="plain").rows  # others unaffected
    # an old list copied back over the node's (a rollback) does not bring bob back
    shutil.copy(saved, node_crl)
    with pytest.raises(RemoteError, match="revoked"):
        bob.query(SQL, purpose=PURPOSE, protection="plain")
    listed = subprocess.run(
        [str(BIN / "datafed"), "pki", "list", "--dir", str(fed.pki_dir)],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "200"},
    )  # fmt: skip
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if "│" in line}
    assert rows["bob"].rstrip(" │").endswith("Z") and rows["alice"].rstrip(" │").endswith("no")


def test_a_node_that_dies_of_a_signal_leaves_its_threads_stacks_in_its_log(tmp_path, caplog):
    """faulthandler in `serve`: a crash says where, in the node's log (docs/operator.md)."""
    import logging
    import os
    import signal

    fed = LocalFederation.create(tmp_path, water_district_specs()[:1])
    fed.start()
    (node,) = fed.nodes
    try:
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGSEGV)
        node.process.wait(30)
    finally:
        with caplog.at_level(logging.WARNING, logger="datafed.local.federation"):
            codes = fed.stop()
    assert codes == [-signal.SIGSEGV]
    log = node.log.read_text()
    assert "Fatal Python error: Segmentation fault" in log
    assert 'File "' in log and "in serve" in log  # the main thread's stack, by function
    assert "died of signal 11" in caplog.text and "Fatal Python error" in caplog.text
