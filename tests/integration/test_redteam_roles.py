"""Issue 17's third red team: the production roles added by issue 22.

Written from the documentation (``README.md``, ``docs/operator.md``, ``docs/analyst.md``,
``docs/audit.md``, ``docs/pki.md``, ``docs/cli.md``), the public wire format
(``protos/``) and the test helpers only, never the product source.  Each test is one
probe of "data available but invisible" against real nodes (mTLS on 127.0.0.1) and
asserts the SAFE behaviour; a test marked ``xfail(strict=True)`` is a finding: it fails
on today's code.

One small DP federation (three nodes, ``bursts`` under DP); the first node scrapes
Prometheus metrics on 127.0.0.1 and logs JSON.  The probes play a curious analyst
(``alice``, ``bob``), a curious node operator (metrics, logs, backups) and the
federation operator (``datafed pki show``, ``datafed init``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.fl.superlink import free_port
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from tests.integration.raw import ledger_records, query_stub, signed_query

BIN = Path(sys.executable).parent
DP = """
[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 20.0
bounds = { bursts = [0, 3], repair_hours = [0, 24] }
"""
SEGMENTS = 4
SAMPLE = re.compile(r"^(datafed_node_\w+)(\{[^}]*\})? (\S+)$")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=SEGMENTS, requesters=("alice", "bob"))
    for s in specs:
        s.policy_toml = s.policy_toml.replace(
            "[datasets.policy.group_domains]", DP.strip() + "\n[datasets.policy.group_domains]"
        )
    lf = LocalFederation.create(
        tmp_path_factory.mktemp("redteam-roles"), specs, analysts=("alice", "bob")
    )
    port = free_port()
    node = lf.nodes[0]
    node.config.write_text(
        node.config.read_text().replace(
            "[node]\n", f'[node]\nmetrics_listen = "127.0.0.1:{port}"\n', 1
        )
    )
    lf.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATAFED_LOG_FORMAT", "json")
        lf.start()
    try:
        yield lf
    finally:
        lf.stop()


def cli(*args: str, exe: str = "datafed-node") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / exe), *args], capture_output=True, text=True, timeout=120, check=False
    )


def scrape(fed: LocalFederation) -> dict[tuple[str, str], float]:
    url = fed.metrics_url  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1), m.group(2) or ""] = float(m.group(3))
    return out


def budget_left(fed: LocalFederation, analyst: str = "alice") -> dict[str, float]:
    fed_toml = fed.fed_toml if analyst == "alice" else fed_for(fed, analyst)
    out = {}
    for status in Federation.from_file(fed_toml).discover():
        assert status.up, status.error
        access = status.info.described["pipe_incidents"].access
        out[status.node] = access.budget_left
    return out


def fed_for(fed: LocalFederation, analyst: str) -> Path:
    """A fed.toml for another analyst of the federation (same nodes)."""
    return fed.write_fed_toml(analyst, Path(fed.fed_toml).with_name(f"fed-{analyst}.toml"))


def wait_signed(fed: LocalFederation) -> dict[tuple[str, str], float]:
    deadline = time.monotonic() + 20
    while True:
        m = scrape(fed)
        if m.get(("datafed_node_ledger_unsigned_entries", ""), 0) == 0:
            return m
        if time.monotonic() > deadline:
            return m
        time.sleep(0.3)


def data_part(m: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Every sample but the durations and the clock-dependent ones."""
    skip = ("duration", "signing_lag", "start_time")
    return {k: v for k, v in m.items() if not any(s in k[0] for s in skip)}


# ---------------------------------------------------------------- probe 1: metrics


def test_metrics_move_the_same_for_an_empty_and_a_full_where(fed: LocalFederation) -> None:
    """Channel: the Prometheus counters (decisions, codes, ledger size, open jobs,
    budgets) as a side channel on data.  Two DP queries whose WHERE selects no row and
    every row must move every non-timing sample by the same amount."""
    alice = Federation.from_file(fed.fed_toml)
    deltas = []
    for where in ("bursts > 100", "bursts >= 0"):
        before = data_part(wait_signed(fed))
        alice.query(
            f"SELECT material, SUM(bursts), COUNT(*), AVG(repair_hours) FROM pipe_incidents"
            f" WHERE {where} GROUP BY material",
            purpose=PURPOSE,
            protection="shares",
        )
        after = data_part(wait_signed(fed))
        deltas.append({k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before})
    assert deltas[0] == deltas[1]


def test_check_config_warns_when_metrics_listen_beyond_loopback(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: the metrics endpoint reachable by an analyst.  Plain HTTP, no auth: the
    operator must be told when it listens beyond loopback (docs/operator.md)."""
    config = fed.nodes[1].config
    copy = config.with_name("node-metrics-open.toml")
    copy.write_text(
        config.read_text().replace(
            "[node]\n", f'[node]\nmetrics_listen = "0.0.0.0:{free_port()}"\n', 1
        )
    )
    done = cli("check-config", "-c", str(copy), "--strict")
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "metrics" in text and "beyond this host" in text, text


# ---------------------------------------------------------------- probe 2: logs


def test_json_logs_carry_no_data_values(fed: LocalFederation) -> None:
    """Channel: the node's JSON log, shipped to a shared log system.  After releases and
    a release that fails after admission, no log line holds a row identifier, a stored
    value or a per-node aggregate of node 0."""
    rows = fed.nodes[0].spec.datasets[0][2]
    alice = Federation.from_file(fed.fed_toml)
    alice.query(
        "SELECT year, SUM(repair_hours), COUNT(*) FROM pipe_incidents GROUP BY year",
        purpose=PURPOSE,
        protection="plain",
    )
    text = fed.nodes[0].log.read_text()
    secrets = {r[0] for r in rows}  # segment ids: never in an SQL here
    by_year: dict[int, float] = {}
    for r in rows:
        by_year[r[2]] = by_year.get(r[2], 0.0) + r[7]
    secrets |= {f"{v:.2f}" for v in by_year.values()}
    secrets |= {f"{sum(r[7] for r in rows):.2f}"}
    leaked = sorted(s for s in secrets if s in text)
    assert not leaked, leaked


# ---------------------------------------------------------------- probe 3: Ctrl-C


def test_cancel_after_admission_keeps_the_charge_and_no_fresh_noise(fed: LocalFederation) -> None:
    """Channel: the analyst's cancel step.  Cancelling a `shares` job after the nodes
    admitted it must not refund epsilon, and retrying with the same job id (for fresh
    noise at no cost) must be refused."""
    alice = Federation.from_file(fed.fed_toml)
    before = budget_left(fed)
    job = "job-redteam-cancel-0001"
    admitted = asyncio.Event()

    seen: list[tuple[str, str, str]] = []

    def progress(step: object) -> None:
        name, state = str(getattr(step, "step", "")), str(getattr(step, "state", ""))
        seen.append((str(getattr(step, "node", "")), name, state))
        node = str(getattr(step, "node", ""))
        if node and name not in ("node info", "query"):
            admitted.set()  # a protocol step: every node admitted the query

    async def run() -> None:
        task = asyncio.ensure_future(
            alice.aquery(
                "SELECT SUM(bursts) FROM pipe_incidents",
                purpose=PURPOSE,
                protection="shares",
                job_id=job,
                progress=progress,
            )
        )
        try:
            await asyncio.wait_for(admitted.wait(), 60)
        except TimeoutError:
            pass
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, RemoteError):
            pass

    asyncio.run(run())
    time.sleep(1)
    after = budget_left(fed)
    records = [r for r in ledger_records(fed, fed.nodes[0].spec.name) if r.job_id == job]
    charged = any(r.epsilon for r in records)
    if charged:  # admitted before the cancel: the charge stays
        assert all(after[n] <= before[n] - 0.5 + 1e-9 for n in before), (before, after)
    else:  # cancelled before admission: nothing released, nothing charged
        assert after == before
    assert charged, f"the cancel came before admission: {seen}"
    # A retry under the cancelled job id is refused (no second noise draw).
    with pytest.raises(RemoteError):
        alice.query(
            "SELECT SUM(bursts) FROM pipe_incidents",
            purpose=PURPOSE,
            protection="shares",
            job_id=job,
        )
    assert budget_left(fed) == after


def test_another_analyst_cannot_reuse_or_cancel_a_job_id(fed: LocalFederation) -> None:
    """Channel: job ids across requesters.  bob sends a query under alice's released job
    id: refused, and alice's released entries stay released."""
    alice = Federation.from_file(fed.fed_toml)
    r = alice.query("SELECT SUM(bursts) FROM pipe_incidents", purpose=PURPOSE, protection="plain")
    ch, stub = query_stub(fed, 0, analyst="bob")
    with ch:
        sq = signed_query(
            fed,
            fed.nodes[0].spec.name,
            "SELECT SUM(bursts) FROM pipe_incidents",
            analyst="bob",
            job_id=r.job_id,
        )
        try:
            stub.Query(sq.request, timeout=30)
        except Exception:
            pass
    records = [r2 for r2 in ledger_records(fed, fed.nodes[0].spec.name) if r2.job_id == r.job_id]
    mine = [x for x in records if x.requester == "alice"]
    assert any(x.decision == "released" for x in mine)
    # bob's call is his own job (ids are per requester) and never rewrites alice's entries.
    assert all(x.requester in ("alice", "bob") for x in records)


# ---------------------------------------------------------------- probe 4: discovery


def test_discovery_json_holds_no_data_derived_numbers(fed: LocalFederation) -> None:
    """Channel: `datafed nodes --json` (row counts, exact min/max of a column)."""
    done = cli("nodes", "-f", str(fed.fed_toml), "--json", exe="datafed")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    rows = fed.nodes[0].spec.datasets[0][2]

    def keys(obj: object) -> set[str]:
        if isinstance(obj, dict):
            return set(obj) | {k for v in obj.values() for k in keys(v)}
        if isinstance(obj, list):
            return {k for v in obj for k in keys(v)}
        return set()

    found = keys(json.loads(text))
    assert not found & {"row_count", "rows", "min", "max", "count", "size_rows"}, found
    maxima = {str(max(r[7] for r in rows)), str(len(rows))}
    assert not [m for m in maxima if re.search(rf"\b{re.escape(m)}\b", text)], maxima


# ---------------------------------------------------------------- probe 5: datafed init


def test_datafed_init_refuses_a_node_not_certified_by_the_ca(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: `datafed init` learns node names over TLS.  A server with a certificate
    from another CA (same node name) must not end up in fed.toml."""
    rogue = tmp_path / "rogue-pki"
    assert (
        cli("pki", "init", "--dir", str(rogue), "--name", "Rogue CA", exe="datafed").returncode == 0
    )
    name = fed.nodes[0].spec.name
    done = cli("pki", "issue", name, "--role", "node", "--dir", str(rogue), exe="datafed")
    assert done.returncode == 0, done.stderr
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(rogue / "node" / f"{name}.crt", rogue / "node" / f"{name}.key")
    ctx.set_alpn_protocols(["h2"])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = tmp_path / "fed.toml"
        done = cli(
            "init",
            f"127.0.0.1:{port}",
            "--analyst",
            "alice",
            "--pki",
            str(fed.pki_dir),
            "-o",
            str(out),
            exe="datafed",
        )
    finally:
        stop.set()
        t.join(5)
        srv.close()
    assert done.returncode != 0, done.stdout + done.stderr
    assert "not from the federation CA" in done.stdout + done.stderr
    assert not out.exists()


# ---------------------------------------------------------------- probe 6: pki show


def test_pki_show_fails_a_csr_with_a_copied_possession_proof(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: `datafed pki show` before `sign`.  Mallory builds a CSR with her own TLS
    key and name but copies alice's Ed25519 key and possession proof (every attribute
    and extension of alice's request): the CA must refuse to bind alice's signing key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    agency = tmp_path / "agency"
    done = cli("pki", "request", "victim", "--role", "analyst", "--dir", str(agency), exe="datafed")
    assert done.returncode == 0, done.stderr
    victim = x509.load_pem_x509_csr((agency / "analyst" / "victim.csr").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datafed"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "analyst"),
                x509.NameAttribute(NameOID.COMMON_NAME, "mallory"),
            ]
        )
    )
    for ext in victim.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier("datafed:analyst:mallory"),
                        x509.DNSName("mallory"),
                    ]
                ),
                ext.critical,
            )
        else:
            builder = builder.add_extension(ext.value, ext.critical)
    for attr in victim.attributes:
        if attr.oid.dotted_string == "1.2.840.113549.1.9.14":  # extensionRequest
            continue
        builder = builder.add_attribute(attr.oid, attr.value)
    forged = builder.sign(key, hashes.SHA256())
    path = tmp_path / "mallory.csr"
    path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    done = cli("pki", "show", str(path), exe="datafed")
    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    assert "FAIL Ed25519 proof of possession" in text, text
    assert "the CA would refuse it" in text, text


# ---------------------------------------------------------------- probe 7: backup/restore


def test_restore_refuses_an_older_archive_without_force(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: an operator rolls back to re-spend epsilon.  A backup taken now, then a DP
    query, then restoring the older backup onto the stopped node must be refused without
    --force (the epsilon the later entries spent would be spendable again)."""
    node = fed.nodes[2]
    config = str(node.config)
    archive = tmp_path / "old.tar.gz"
    done = cli("backup", "-c", config, "-o", str(archive))
    assert done.returncode == 0, done.stderr
    alice = Federation.from_file(fed.fed_toml)
    alice.query("SELECT SUM(bursts) FROM pipe_incidents", purpose=PURPOSE, protection="plain")
    spent = budget_left(fed)[node.spec.name]
    fed.stop_node(node)
    try:
        done = cli("restore", str(archive), "-c", config)
        assert done.returncode != 0, done.stdout
        assert "shorter" in (done.stdout + done.stderr).lower() or "force" in (
            done.stdout + done.stderr
        )
    finally:
        fed.start_node(node)
        fed.write_fed_toml()
    assert budget_left(fed)[node.spec.name] == spent


def test_restore_refuses_another_nodes_archive(fed: LocalFederation, tmp_path: Path) -> None:
    """Channel: an operator installs a neighbour's state (its budgets, its ledger)."""
    archive = tmp_path / "other.tar.gz"
    assert cli("backup", "-c", str(fed.nodes[1].config), "-o", str(archive)).returncode == 0
    node = fed.nodes[2]
    fed.stop_node(node)
    try:
        done = cli("restore", str(archive), "-c", str(node.config), "--force")
        assert done.returncode != 0, done.stdout
    finally:
        fed.start_node(node)
        fed.write_fed_toml()
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---------------------------------------------------------------- probe 8: cancel another's job


def test_an_analyst_cannot_cancel_another_analysts_open_job(fed: LocalFederation) -> None:
    """Channel: the cancel step across requesters.  bob holds a `shares` job open at its
    protocol step; alice, under the same job id, starts a query and cancels it at its
    protocol step (her client sends the cancel to every node).  bob's job must still
    complete."""
    job = "job-redteam-shared-id-0001"
    bob = Federation.from_file(fed_for(fed, "bob"))
    alice = Federation.from_file(fed.fed_toml)
    held, go = threading.Event(), threading.Event()

    def hold(step: object) -> None:
        node = str(getattr(step, "node", ""))
        if node and str(getattr(step, "step", "")) not in ("node info", "query"):
            held.set()
            go.wait(60)  # bob's client stops here, his job open at the nodes

    result: dict[str, object] = {}

    def run_bob() -> None:
        try:
            result["r"] = bob.query(
                "SELECT SUM(bursts) FROM pipe_incidents",
                purpose=PURPOSE,
                protection="shares",
                job_id=job,
                progress=hold,
            )
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=run_bob, daemon=True)
    t.start()
    assert held.wait(60)

    async def alice_cancels() -> None:
        mine: list[asyncio.Future[object]] = []

        def cancel_at_step(step: object) -> None:
            # alice's job is admitted and open at a protocol step: she cancels it there
            # (a fixed delay raced her query, which can finish within a few milliseconds)
            if str(getattr(step, "node", "")) and str(getattr(step, "step", "")) not in (
                "node info",
                "query",
            ):
                mine[0].cancel()

        task = asyncio.ensure_future(
            alice.aquery(
                "SELECT SUM(bursts) FROM pipe_incidents",
                purpose=PURPOSE,
                protection="shares",
                job_id=job,
                progress=cancel_at_step,
            )
        )
        mine.append(task)
        try:
            await task
        except (asyncio.CancelledError, RemoteError):
            pass

    asyncio.run(alice_cancels())
    go.set()
    t.join(60)
    assert "error" not in result, result.get("error")
    records = [r for r in ledger_records(fed, fed.nodes[0].spec.name) if r.job_id == job]
    assert any(r.requester == "alice" and "cancel" in r.reason for r in records), records
    assert not [r for r in records if r.requester == "bob" and "cancel" in r.reason], records


# ---------------------------------------------------------------- probe 9: reload


def test_a_reload_decision_does_not_depend_on_or_quote_the_data(fed: LocalFederation) -> None:
    """Channel: `datafed-node reload` (its message, exit status and `policy_reload` ledger
    entry, which auditors read).  DP bounds narrower than the stored values ([0, 1] while
    some segment has 2 bursts) are a policy choice (values are clamped): the decision
    must not depend on the rows, and neither the message nor the entry quotes a value."""
    node = fed.nodes[1]
    rows = node.spec.datasets[0][2]
    assert max(r[6] for r in rows) >= 2
    original = node.config.read_text()
    narrow = original.replace("bursts = [0, 3]", "bursts = [0, 1]")
    assert narrow != original
    node.config.write_text(narrow)
    try:
        done = cli("reload", "--config", str(node.config))
    finally:
        node.config.write_text(original)
        back = cli("reload", "--config", str(node.config))
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert back.returncode == 0, back.stdout + back.stderr
    entries = [r for r in ledger_records(fed, node.spec.name) if r.operation == "policy_reload"]
    assert entries and all(e.decision == "approved" for e in entries), entries
    for value in {str(max(r[6] for r in rows)), *(f"{r[7]:.2f}" for r in rows if r[7])}:
        assert not any(value in e.reason for e in entries if value not in ("0", "1", "3"))


def test_two_analysts_jobs_under_one_job_id_stay_apart(fed: LocalFederation) -> None:
    """Channel: protocol state keyed by job id.  While bob's `shares` job J is open at
    its protocol step, alice runs her own `shares` job under the same id J to the end.
    Her steps must not reach bob's open job (no payload of his, no breaking it): either
    she is refused, or both jobs complete, each charged once."""
    job = "job-redteam-shared-id-0002"
    bob = Federation.from_file(fed_for(fed, "bob"))
    alice = Federation.from_file(fed.fed_toml)
    held, go = threading.Event(), threading.Event()

    def hold(step: object) -> None:
        node = str(getattr(step, "node", ""))
        if node and str(getattr(step, "step", "")) not in ("node info", "query"):
            held.set()
            go.wait(60)

    result: dict[str, object] = {}

    def run_bob() -> None:
        try:
            result["r"] = bob.query(
                "SELECT COUNT(*) FROM pipe_incidents",
                purpose=PURPOSE,
                protection="shares",
                job_id=job,
                progress=hold,
            )
        except Exception as exc:
            result["error"] = exc

    before = budget_left(fed)
    t = threading.Thread(target=run_bob, daemon=True)
    t.start()
    assert held.wait(60)
    try:
        mine = alice.query(
            "SELECT COUNT(*) FROM pipe_incidents WHERE bursts > 0",
            purpose=PURPOSE,
            protection="shares",
            job_id=job,
        )
    except RemoteError as exc:
        mine = None
        alice_error = str(exc)
    finally:
        go.set()
        t.join(60)
    assert "error" not in result, result.get("error")
    if mine is not None:
        assert mine.job_id == job
    else:
        assert "job" in alice_error, alice_error
    after = budget_left(fed)
    charges = 2 if mine is not None else 1
    for n in before:
        assert abs(before[n] - after[n] - 0.5 * charges) < 1e-9, (n, before, after)


def test_a_forced_rollback_to_respend_epsilon_is_caught_by_the_audit_state(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: an operator restores an older backup with --force (its ledger "lost") so
    the epsilon spent since is spendable again.  The node accepts it (documented), but an
    auditor whose policy keeps `state` must see the rollback on the next verify."""
    import tomllib

    node = fed.nodes[2]
    config = str(node.config)
    state_dir = Path(tomllib.loads(node.config.read_text())["node"]["state_dir"])
    if not state_dir.is_absolute():
        state_dir = node.config.parent / state_dir
    done = cli("vkey", str(fed.pki_dir / "node" / f"{node.spec.name}.crt"), exe="datafed-audit")
    assert done.returncode == 0, done.stderr
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'quorum = 0\nlogs = ["{done.stdout.strip()}"]\nwitnesses = []\n'
        f'state = "{tmp_path / "audit-state.json"}"\n'
    )
    alice = Federation.from_file(fed.fed_toml)
    alice.query("SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="plain")
    time.sleep(2)  # signed within node.sign_within_s
    archive = tmp_path / "old.tar.gz"
    assert cli("backup", "-c", config, "-o", str(archive)).returncode == 0
    alice.query("SELECT SUM(bursts) FROM pipe_incidents", purpose=PURPOSE, protection="plain")
    spent = budget_left(fed)[node.spec.name]
    time.sleep(2)  # signed within node.sign_within_s

    def audit(name: str) -> subprocess.CompletedProcess[str]:
        out = tmp_path / name
        exp = cli("export", str(out), "--db", str(state_dir / "ledger.sqlite"), exe="datafed-audit")
        assert exp.returncode == 0, exp.stdout + exp.stderr
        return cli(
            "verify",
            str(out),
            "-p",
            str(policy),
            "--no-witnesses",
            "--allow-unsigned-tail",
            exe="datafed-audit",
        )

    first = audit("export-1")
    assert first.returncode == 0, first.stdout + first.stderr
    fed.stop_node(node)
    try:
        done = cli("restore", str(archive), "-c", config, "--force")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        fed.start_node(node)
        fed.write_fed_toml()
    assert budget_left(fed)[node.spec.name] > spent  # the node forgot the spend
    second = audit("export-2")
    text = second.stdout + second.stderr
    assert second.returncode == 1, text
    assert "log-rolled-back" in text, text


# ---------------------------------------------------------------- probe 10: import


def test_a_refused_import_does_not_write_a_cell_value_into_the_ledger(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: `datafed-node import`'s ledger entry.  A refused import is recorded as
    `denied` with its reason; the documented reason quotes the offending cell
    (`'2023.5' is not integer`).  Entries are read by auditors and by witness-role
    parties (`GetEntries`): a stored value (here a name typed into a numeric column) must not
    reach them through the entry."""
    node = fed.nodes[1]
    original = node.config.read_text()
    secret = "Jane Doe 1961-04-12"
    csv = tmp_path / "visits.csv"
    csv.write_text(f"district,cost\nnorth,12.5\neast,{secret}\n")
    fed.stop_node(node)
    try:
        node.config.write_text(
            original
            + f'\n[[datasets]]\nname = "visits"\npath = "{tmp_path / "visits.duckdb"}"\n'
            + 'types = { cost = "real" }\n'
        )
        done = cli("import", "-c", str(node.config), "-d", "visits", str(csv))
        text = done.stdout + done.stderr
        assert done.returncode != 0, text  # refused: the operator sees the line and value
    finally:
        node.config.write_text(original)
        fed.start_node(node)
        fed.write_fed_toml()
    records = [r for r in ledger_records(fed, node.spec.name) if r.operation == "import"]
    assert records and records[-1].decision == "denied", records
    assert not [r for r in records if secret in repr(r)], [r.reason for r in records]


# ---------------------------------------------------------------- probe 11: serve's refusal


def test_a_refused_start_does_not_log_stored_values(fed: LocalFederation) -> None:
    """Channel: the node's log output (shipped to a shared log system) when `serve`
    refuses a dataset whose stored values do not fit a declared type.  The operator's
    `check-config` may show the value on its console; the serving process's log must not
    carry a stored value or a row count, and must stay JSON."""
    node = fed.nodes[1]
    rows = node.spec.datasets[0][2]
    original = node.config.read_text()
    i = original.index("[[datasets]]")
    j = original.index("\n[", i + 5)
    bad = original[:j] + '\ntypes = { district = "integer" }' + original[j:]
    fed.stop_node(node)
    try:
        node.config.write_text(bad)
        done = cli("serve", "-c", str(node.config), "--log-format", "json")
    finally:
        node.config.write_text(original)
        fed.start_node(node)
        fed.write_fed_toml()
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    districts = {r[1] for r in rows}
    assert not [d for d in districts if f"'{d}'" in out], out
    assert str(len(rows)) not in out, out
    for line in out.splitlines():
        if line.strip():
            json.loads(line)  # every line a JSON object, as promised for log shippers


# ---------------------------------------------------------------- probe 12: renewal


def test_renew_install_refuses_a_certificate_from_another_ca(
    fed: LocalFederation, tmp_path: Path
) -> None:
    """Channel: certificate renewal.  An operator (or whoever can write the node's
    folder) installs a certificate for the node's own name, made for the new TLS key,
    but issued by a rogue CA: refused, and the node's configuration still checks."""
    node = fed.nodes[2]
    config = str(node.config)
    csr_path = tmp_path / "renew.csr"
    done = cli("renew", "request", "-c", config, "-o", str(csr_path))
    assert done.returncode == 0, done.stdout + done.stderr
    rogue = tmp_path / "rogue-pki"
    assert cli("pki", "init", "--dir", str(rogue), "--name", "Rogue", exe="datafed").returncode == 0
    done = cli(
        "pki",
        "sign",
        str(csr_path),
        "--dir",
        str(rogue),
        "--out",
        str(tmp_path / "r.crt"),
        exe="datafed",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("renew", "install", str(tmp_path / "r.crt"), "-c", config)
    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    assert "CA" in text or "issued" in text, text
    assert cli("check-config", "-c", config).returncode == 0
