from pathlib import Path

import pytest

from datafed.errors import ConfigError
from datafed.local import synth
from datafed.pki.ca import Identity, identity_from_pem, party_paths
from datafed.query.components import components
from datafed.query.sql import parse_sql
from nodes.config import load_node_config
from nodes.errors import InvalidRequest, NotFound, PermissionDenied
from nodes.policy import Use
from nodes.policy.rules import check
from nodes.stores import DataStore

BASE = """
[node]
name = "water-north"
listen = "127.0.0.1:0"

[tls]
ca = "ca.crt"
cert = "n.crt"
key = "n.key"
signing_key = "n.ed25519"

[[datasets]]
name = "pipe_incidents"
path = "data.sqlite"

[datasets.policy]
allowed_requesters = ["alice"]
allowed_purposes = ["planning"]
min_group_size = 3
person_level = false
consortium = ["water-north", "water-east", "water-south"]
"""
ROSTER = ("water-north", "water-east", "water-south")


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    (tmp_path / "node.toml").write_text(BASE)
    rows = synth.pipe_incidents("north", seed=1, segments=20, years=(2024,))
    synth.write_table(tmp_path / "data.sqlite", "pipe_incidents", synth.PIPE_COLUMNS, rows)
    return tmp_path


def test_valid_config_resolves_paths(node_dir):
    cfg = load_node_config(node_dir / "node.toml")
    assert cfg.tls.ca == (node_dir / "ca.crt").resolve()
    assert cfg.datasets[0].path == (node_dir / "data.sqlite").resolve()
    assert cfg.datasets[0].policy.allowed_protections == ["paillier"]  # default-deny plain


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda s: s.replace('name = "water-north"', 'name = "Water North!"'), "node.name"),
        (
            lambda s: s.replace("min_group_size = 3", "min_group_size = 0"),
            "datasets.0.policy.min_group_size",
        ),
        (lambda s: s.replace('path = "data.sqlite"', ""), "exactly one of 'path'"),
        (lambda s: s + "\nsurprise = 1\n", "surprise"),
        (lambda s: s.replace('name = "pipe_incidents"', 'name = "x; DROP"'), "datasets.0.name"),
        (lambda s: s.replace('listen = "127.0.0.1:0"', 'listen = "nowhere"'), "node.listen"),
        (lambda s: s.replace("[tls]", "[tls\n"), "not valid TOML"),
        (
            lambda s: s.replace(
                'allowed_purposes = ["planning"]', 'allowed_protections = ["rot13"]'
            ),
            "allowed_protections",
        ),
    ],
)
def test_malformed_config_names_the_field(node_dir, edit, fragment):
    path = node_dir / "node.toml"
    path.write_text(edit(BASE))
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert fragment in str(info.value)
    assert "node.toml" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_node_config(tmp_path / "nope.toml")


def test_store_matches_direct_computation(node_dir):
    import sqlite3

    cfg = load_node_config(node_dir / "node.toml")
    store = DataStore(cfg.datasets)
    spec = parse_sql(
        "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents "
        "WHERE month BETWEEN 1 AND 6 AND diameter_mm IN (100, 150, 200) GROUP BY material"
    )
    got = {g.key: g for g in store.aggregate(spec, components(spec), 16)}
    with sqlite3.connect(node_dir / "data.sqlite") as db:
        want = db.execute(
            "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents "
            "WHERE month BETWEEN 1 AND 6 AND diameter_mm IN (100, 150, 200) GROUP BY material"
        ).fetchall()
    assert set(got) == {(m,) for m, _, _ in want}
    for m, s, c in want:
        # sum(bursts), count(bursts) (its non-null count: no NULLs here), count(*)
        assert got[(m,)].values == (s << 16, c, c)
        assert got[(m,)].rows == c
    store.close()


def test_store_refuses_unknown_dataset_and_column(node_dir):
    store = DataStore(load_node_config(node_dir / "node.toml").datasets)
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        store.aggregate(parse_sql("SELECT COUNT(*) FROM nope"), (), 16)
    spec = parse_sql("SELECT SUM(salary) FROM pipe_incidents")
    with pytest.raises(InvalidRequest, match="unknown column 'salary'"):
        store.aggregate(spec, components(spec), 16)
    store.close()


def test_store_is_read_only(node_dir):
    import sqlalchemy as sa

    store = DataStore(load_node_config(node_dir / "node.toml").datasets)
    engine = store._datasets["pipe_incidents"].engine
    with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM pipe_incidents"))
    store.close()


def test_store_config_errors(node_dir):
    cfg = load_node_config(node_dir / "node.toml")
    bad = cfg.datasets[0].model_copy(update={"columns": ["bursts", "salary"]})
    with pytest.raises(ConfigError, match="salary"):
        DataStore([bad])


def _ident(pki_dir, role="analyst", name="alice") -> Identity:
    return identity_from_pem(party_paths(pki_dir, role, name).cert.read_bytes())


def _query_use(identity, purpose, spec, protection, roster=("a", "b", "c")):
    from datafed.wire.signing import new_header
    from datafed.wire.statement import JobStatement, SignedJobStatement

    st = JobStatement(
        "job",
        identity.name,
        purpose,
        "query",
        spec.dataset,
        b"\0" * 32,
        protection,
        b"\0" * 32,
        tuple(roster),
        0,
        1,
    )
    return Use(
        operation="query",
        requester=identity,
        header=new_header(identity.name, "water-north", "job", purpose),
        dataset=spec.dataset,
        columns=frozenset(spec.columns()),
        protection=protection,
        spec=spec,
        statement=SignedJobStatement(st, b"raw", b"sig"),
    )


def _decide(cfg, identity, purpose, spec, protection, roster=ROSTER):
    cols = tuple(n for n, _ in synth.PIPE_COLUMNS)
    ds = cfg.dataset(spec.dataset)
    return check(_query_use(identity, purpose, spec, protection, roster), cfg, cols if ds else None)


@pytest.mark.parametrize(
    ("sql", "purpose", "protection", "error", "fragment"),
    [
        ("SELECT SUM(bursts) FROM pipe_incidents", "planning", "paillier", None, ""),
        ("SELECT SUM(bursts) FROM nope", "planning", "paillier", NotFound, "unknown dataset"),
        (
            "SELECT SUM(bursts) FROM pipe_incidents",
            "marketing",
            "paillier",
            PermissionDenied,
            "purpose 'marketing'",
        ),
        (
            "SELECT SUM(salary) FROM pipe_incidents",
            "planning",
            "paillier",
            InvalidRequest,
            "unknown column 'salary'",
        ),
        (
            "SELECT MAX(bursts) FROM pipe_incidents",
            "planning",
            "paillier",
            PermissionDenied,
            "MAX is not allowed",
        ),
        (
            "SELECT SUM(bursts) FROM pipe_incidents",
            "planning",
            "plain",
            PermissionDenied,
            "protection 'plain'",
        ),
    ],
)
def test_policy_decisions(node_dir, pki_dir, sql, purpose, protection, error, fragment):
    cfg = load_node_config(node_dir / "node.toml")
    if error is None:
        assert _decide(cfg, _ident(pki_dir), purpose, parse_sql(sql), protection)
    else:
        with pytest.raises(error, match=fragment):
            _decide(cfg, _ident(pki_dir), purpose, parse_sql(sql), protection)


def test_policy_needs_enough_participants(node_dir, pki_dir):
    """Exact data: a job names exactly the consortium -- no subset, no stranger."""
    cfg = load_node_config(node_dir / "node.toml")
    spec = parse_sql("SELECT SUM(bursts) FROM pipe_incidents")
    for roster in (("water-north",), ROSTER[:2], (*ROSTER, "water-west")):
        with pytest.raises(PermissionDenied, match="exactly its consortium"):
            _decide(cfg, _ident(pki_dir), "planning", spec, "paillier", roster=roster)
    assert _decide(cfg, _ident(pki_dir), "planning", spec, "paillier", roster=ROSTER[::-1])


def test_policy_refuses_other_requester_and_role(node_dir, pki_dir):
    from datafed import pki

    pki.issue(pki_dir, "analyst", "mallory")
    cfg = load_node_config(node_dir / "node.toml")
    spec = parse_sql("SELECT SUM(bursts) FROM pipe_incidents")
    with pytest.raises(PermissionDenied, match="requester 'mallory'"):
        _decide(cfg, _ident(pki_dir, name="mallory"), "planning", spec, "paillier")
    with pytest.raises(PermissionDenied, match="role 'node'"):
        _decide(cfg, _ident(pki_dir, "node", "water-north"), "planning", spec, "paillier")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ('small_groups = "refuse"\n', "small_groups was removed"),
        ("differencing_defence = true\n", "differencing_defence was removed"),
    ],
)
def test_removed_policy_keys_are_refused_with_their_reason(node_dir, edit, fragment):
    path = node_dir / "node.toml"
    path.write_text(path.read_text() + edit)
    with pytest.raises(ConfigError, match=fragment):
        load_node_config(path)


def test_an_exact_dataset_declares_a_consortium_that_names_the_node(node_dir):
    path = node_dir / "node.toml"
    base = path.read_text()
    path.write_text(base.replace('consortium = ["water-north", "water-east", "water-south"]\n', ""))
    with pytest.raises(ConfigError, match="needs its consortium"):
        load_node_config(path)
    path.write_text(base.replace('"water-north", "water-east"', '"water-west", "water-east"'))
    with pytest.raises(ConfigError, match="the consortium must name this node"):
        load_node_config(path)
