"""The ``[witness]``/``[publish]`` tables and the publisher's failure handling (no network)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from datafed import pki
from datafed.errors import ConfigError, PkiError
from datafed.local.federation import LocalFederation, water_district_specs
from nodes.config import load_node_config
from nodes.context import NodeContext
from nodes.ledger.publish import Publisher, open_witness_store, witness_name


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    root = tmp_path_factory.mktemp("pubfed")
    return LocalFederation.create(root, water_district_specs(segments=20), witnesses=True)


def test_local_federation_writes_witness_tables(fed: LocalFederation) -> None:
    cfg = load_node_config(fed.nodes[0].config)
    peers = [n.spec.name for n in fed.nodes[1:]]
    assert cfg.witness is not None and cfg.publish is not None
    assert [p.name for p in cfg.witness.peers] == [f"{p}.crt" for p in peers]
    assert [w.name for w in cfg.publish.witnesses] == peers
    assert not cfg.node.listen.endswith(":0")


def test_publishing_to_oneself_is_refused(fed: LocalFederation, tmp_path: Path) -> None:
    text = (
        fed.nodes[0]
        .config.read_text()
        .replace(
            f'name = "{fed.nodes[1].spec.name}"\naddress',
            f'name = "{fed.nodes[0].spec.name}"\naddress',
        )
    )
    bad = fed.nodes[0].config.parent / "self.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="cannot witness its own log"):
        load_node_config(bad)


def test_witness_store_pins_peer_keys(fed: LocalFederation) -> None:
    ctx = NodeContext.open(load_node_config(fed.nodes[0].config))
    try:
        store = open_witness_store(ctx)
        assert store is not None and store.name == witness_name(fed.nodes[0].spec.name)
        assert sorted(store._logs) == sorted(f"datafed/ledger/{n.spec.name}" for n in fed.nodes[1:])
        store.close()
        own = pki.party_paths(fed.pki_dir, "node", ctx.name).cert
        assert ctx.config.witness is not None
        ctx.config.witness.peers.append(own)
        with pytest.raises(ValueError, match="cannot witness its own log"):
            open_witness_store(ctx)
        ctx.config.witness.peers[-1] = pki.party_paths(fed.pki_dir, "analyst", "alice").cert
        with pytest.raises(PkiError, match="expected 'node'"):
            open_witness_store(ctx)
    finally:
        ctx.close()


async def test_unreachable_witnesses_are_logged_not_raised(
    fed: LocalFederation, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = NodeContext.open(load_node_config(fed.nodes[2].config))
    try:
        publisher = Publisher.open(ctx)
        assert publisher is not None
        assert await publisher.publish_once() == {}  # an empty log has nothing to publish
        await ctx.record(
            caller=None, header=None, dataset="d", operation="query", protection="plain",
            decision="denied", reason="test", request_digest="00" * 32,
        )  # fmt: skip
        for t in publisher.targets:
            t.client.timeout = 1.0
        with caplog.at_level(logging.WARNING, logger="datafed.node"):
            got = await publisher.publish_once()
        assert got == dict.fromkeys((n.spec.name for n in fed.nodes[:2]), False)
        assert "did not cosign" in caplog.text
        await publisher.stop()
    finally:
        ctx.close()


def test_a_witness_certificate_must_name_the_witness(fed: LocalFederation, tmp_path: Path) -> None:
    a, b = (n.spec.name for n in fed.nodes[1:])
    text = fed.nodes[0].config.read_text()
    cert_a = str(pki.party_paths(fed.pki_dir, "node", a).cert)
    cert_b = str(pki.party_paths(fed.pki_dir, "node", b).cert)
    swapped = text.replace(f'cert = "{cert_a}"', f'cert = "{cert_b}"')
    path = fed.nodes[0].config.parent / "swapped.toml"
    path.write_text(swapped)
    ctx = NodeContext.open(load_node_config(path))
    try:
        with pytest.raises(PkiError, match=f"is for node:{b}, not {a}"):
            Publisher.open(ctx)
    finally:
        ctx.close()
