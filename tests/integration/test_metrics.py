"""A node's Prometheus endpoint, scraped over HTTP on 127.0.0.1, and its JSON logs.

Three real DP nodes; the first has ``node.metrics_listen`` and logs JSON.  A scrape shows
calls by method and status, ledger records by operation and decision, latency
histograms, the ledger's size and signing lag, the budget left per dataset, open jobs
and the key cache -- and nothing derived from the data or naming an analyst.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.fl.superlink import free_port
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from tests.integration.raw import ledger_records

DP = """
[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 5.0
bounds = { bursts = [0, 3] }
"""
SQL = "SELECT material, SUM(bursts) FROM pipe_incidents GROUP BY material"
SAMPLE = re.compile(r"^(datafed_node_\w+)(\{[^}]*\})? (\S+)$")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=10)
    for s in specs:
        s.policy_toml = s.policy_toml.replace(
            "[datasets.policy.group_domains]", DP.strip() + "\n[datasets.policy.group_domains]"
        )
    lf = LocalFederation.create(tmp_path_factory.mktemp("metrics"), specs)
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


def scrape(fed: LocalFederation) -> tuple[str, dict[tuple[str, str], float]]:
    with urllib.request.urlopen(fed.metrics_url, timeout=10) as resp:  # type: ignore[attr-defined]
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not exposition format: {line!r}"
        samples[m.group(1), m.group(2) or ""] = float(m.group(3))
    return text, samples


def test_a_scrape_shows_load_decisions_ledger_and_budget(fed: LocalFederation) -> None:
    node = fed.nodes[0].spec.name
    _, before = scrape(fed)
    left = "datafed_node_dp_budget_epsilon_left", '{dataset="pipe_incidents",scope="dataset"}'
    assert before[left] == 5.0
    assert before["datafed_node_dp_budget_epsilon", '{dataset="pipe_incidents"}'] == 5.0
    alice = Federation.from_file(fed.fed_toml)
    alice.query(SQL, purpose=PURPOSE)
    with pytest.raises(RemoteError, match="purpose"):
        alice.query(SQL, purpose="marketing")
    deadline = time.monotonic() + 20
    while True:  # the checkpoint is signed within node.sign_within_s
        text, after = scrape(fed)
        if after["datafed_node_ledger_unsigned_entries", ""] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert after["datafed_node_ledger_unsigned_entries", ""] == 0
    assert after["datafed_node_ledger_signing_lag_seconds", ""] == 0
    assert after["datafed_node_ledger_entries", ""] == len(ledger_records(fed, node))
    assert after[left] == 4.5
    query = 'method="QueryService/Query"'
    assert after["datafed_node_calls_total", "{" + query + ',code="OK"}'] >= 1
    assert after["datafed_node_calls_total", "{" + query + ',code="PERMISSION_DENIED"}'] >= 1
    records = {
        decision: after.get(
            ("datafed_node_ledger_records_total", f'{{operation="query",decision="{decision}"}}'),
            0,
        )
        for decision in ("approved", "released", "denied")
    }
    assert records == {"approved": 1, "released": 1, "denied": 1}
    count = after["datafed_node_call_duration_seconds_count", "{" + query + "}"]
    inf = after["datafed_node_call_duration_seconds_bucket", "{" + query + ',le="+Inf"}']
    assert count == inf >= 2
    assert after["datafed_node_call_duration_seconds_sum", "{" + query + "}"] > 0
    assert after["datafed_node_open_jobs", ""] == 0
    assert after["datafed_node_paillier_key_cache_bytes", ""] >= 0
    assert after["datafed_node_paillier_key_cache_limit_bytes", ""] == 536870912
    assert after["datafed_node_ckks_context_cache_bytes", ""] >= 0
    assert after["datafed_node_ckks_context_cache_limit_bytes", ""] == 268435456
    assert after["datafed_node_info", f'{{node="{node}",version="0.1.0"}}'] == 1
    # Nothing in a scrape comes from the data or names an analyst.
    for secret in ("alice", "cast_iron", "ductile_iron", "steel", "pvc", "marketing"):
        assert secret not in text


def test_the_endpoint_is_loopback_metrics_only_and_logs_are_json(fed: LocalFederation) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(fed.metrics_url.replace("/metrics", "/"), timeout=10)  # type: ignore[attr-defined]
    assert info.value.code == 404
    lines = [json.loads(x) for x in fed.nodes[0].log.read_text().splitlines() if x.strip()]
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x["message"].startswith("metrics (plaintext HTTP) on 127.0.0.1:") for x in lines)
    assert any(re.match(r"ledger\[\d+\] approved query by alice", x["message"]) for x in lines)


def test_the_dashboard_plots_only_what_a_node_exposes(fed: LocalFederation) -> None:
    from pathlib import Path

    text, _ = scrape(fed)
    families = set(re.findall(r"^# TYPE (datafed_node_\w+) ", text, re.M))
    board = json.loads((Path(__file__).parents[2] / "docs" / "grafana-node.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"datafed_node_\w+", e)
    }
    assert used and used <= families, used - families
