"""One analyst with a valid certificate against a node's capacity (issue 17, class 7).

- 7a, half-open calls: an analyst opens many calls and never sends their request (the
  HTTP/2 stream is open, the headers are sent, the message never comes). Each used to
  hold one of the node's ``max_concurrent_requests`` for as long as the analyst liked,
  locking out analysts, the auditor and witnesses, with nothing recorded.
- 7b, heavy queries: eight concurrent queries of the largest cost the node allows used
  to take every compute thread, so another analyst's query waited for all of them.

Against three real node processes (mTLS, loopback). Nothing here measures time: the
assertions are on outcomes -- who is served while the attack is held, in which order
queries finish, what the ledger records. Deadlines are generous.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import grpc
import pytest

from audit import DataUseRecord, decode_leaf
from audit.remote import LedgerClient, mtls_channel
from datafed.client import Federation
from datafed.local.federation import LocalFederation, water_district_specs
from datafed.pki.ca import party_paths
from datafed.proto.v1 import common_pb2, modes_pb2, query_pb2
from tests.integration.raw import PURPOSE, query_stub, signed_query

#: Calls one requester may have in flight at a node (``node.max_requests_per_requester``).
PER_REQUESTER = 8
#: Calls of one requester that may wait for a place (``node.max_waiting_per_requester``).
WAITING = 16
#: Half-open calls of the attack (the old ``node.max_concurrent_requests``).
HALF_OPEN = 64
#: A heavy query: GROUP BY year, month, material over their declared values (3 x 12 x 4
#: groups and the remainder) x HISTOGRAMS of EDGES edges = 37,120 values, about 1,240
#: packed Paillier ciphertexts (seconds of one core each query).
HISTOGRAMS, EDGES = 4, 64
QUERY_METHOD = "/datafed.proto.v1.QueryService/Query"
#: water-north holds half-open calls for the whole test; water-east cuts them quickly.
NODE_KEYS = {
    "water-north": (
        f"request_timeout_s = 600\nmax_requests_per_requester = {PER_REQUESTER}\n"
        f"max_waiting_per_requester = {WAITING}\n"
    ),
    "water-east": "request_timeout_s = 2\n",
}
#: Queries of the largest cost water-north allows cost seconds, not minutes.
LIMITS = (
    "\n[limits]\nmax_ciphertexts = 2048\ncompute_threads = 4\ncompute_threads_per_requester = 1\n"
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """Three water offices serving alice and bob; water-north and water-east configured."""
    specs = water_district_specs(segments=40)
    for spec in specs:
        spec.policy_toml = spec.policy_toml.replace('["alice"]', '["alice", "bob"]')
    fed = LocalFederation.create(tmp_path_factory.mktemp("fair"), specs, analysts=("alice", "bob"))
    for node in fed.nodes:
        keys = NODE_KEYS.get(node.spec.name, "")
        text = node.config.read_text().replace(
            'state_dir = "state"\n', f'state_dir = "state"\n{keys}'
        )
        node.config.write_text(text + (LIMITS if node.spec.name == "water-north" else ""))
    fed.start()
    fed.write_fed_toml("bob")
    try:
        yield fed
    finally:
        codes = fed.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def _records(fed: LocalFederation, node: str, start: int = 0) -> list[DataUseRecord]:
    path = fed.root / "nodes" / node / "state" / "ledger.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT leaf FROM entries WHERE idx >= ? ORDER BY idx", (start,))
        return [decode_leaf(bytes(r[0]))[1] for r in rows]


def _wait_for(what: str, done: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """Poll until ``done()``; the timeout only bounds a broken run (it asserts nothing)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------ 7a: half-open calls
class HalfOpenCalls:
    """Calls whose request is never sent, held open on a background event loop.

    Each goes over its own connection (a node may limit the calls of one connection),
    as an attacker would: the headers reach the node, the message never does.
    """

    def __init__(self, fed: LocalFederation, node: int, analyst: str = "alice") -> None:
        self.target = fed.nodes[node]
        files = party_paths(fed.pki_dir, "analyst", analyst)
        self.creds = grpc.ssl_channel_credentials(
            (fed.pki_dir / "ca.crt").read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[grpc.aio.StreamUnaryCall] = []

    def _run(self, coro: object) -> object:
        fut: Future[object] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(60)

    def open(self, count: int) -> None:
        """Open ``count`` more calls to QueryService.Query, sending headers only."""

        async def open_() -> None:
            for _ in range(count):
                ch = grpc.aio.secure_channel(
                    self.target.address,
                    self.creds,
                    options=[
                        ("grpc.ssl_target_name_override", self.target.spec.name),
                        ("grpc.use_local_subchannel_pool", 1),
                    ],
                )
                self.channels.append(ch)
                call = ch.stream_unary(
                    QUERY_METHOD,
                    request_serializer=common_pb2.SignedRequest.SerializeToString,
                    response_deserializer=query_pb2.QueryResponse.FromString,
                )()
                self.calls.append(call)

        self._run(open_())

    def codes(self) -> list[grpc.StatusCode | None]:
        """Each call's status, ``None`` while it is still held open."""

        async def codes() -> list[grpc.StatusCode | None]:
            return [await c.code() if c.done() else None for c in self.calls]

        return self._run(codes())  # type: ignore[return-value]

    def details(self) -> list[str]:
        """The status details of the calls that ended."""

        async def details() -> list[str]:
            return [await c.details() or "" for c in self.calls if c.done()]

        return self._run(details())  # type: ignore[return-value]

    def close(self) -> None:
        async def close() -> None:
            for c in self.calls:
                c.cancel()
            for ch in self.channels:
                await ch.close()

        self._run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _checkpoint(fed: LocalFederation, node: int, role: str, name: str) -> str:
    """The node's checkpoint, read as ``role:name`` (an auditor, or another node)."""
    target = fed.nodes[node]
    files = party_paths(fed.pki_dir, role, name)

    async def fetch() -> str:
        ca = fed.pki_dir / "ca.crt"
        async with mtls_channel(target.address, ca, files.cert, files.key, target.spec.name) as ch:
            return await LedgerClient(ch, 60).checkpoint()

    return asyncio.run(fetch())


def test_half_open_calls_do_not_lock_out_other_callers(fed):
    north = fed.nodes[0].spec.name
    before = len(_records(fed, north))
    attack = HalfOpenCalls(fed, 0)
    try:
        attack.open(HALF_OPEN)
        # alice holds her share, a few more of hers wait their turn; the node refuses the
        # rest at once and records each refusal.
        refused = HALF_OPEN - PER_REQUESTER - WAITING
        _wait_for(
            "the calls over alice's share to be refused",
            lambda: sum(c is not None for c in attack.codes()) >= refused,
        )
        codes = attack.codes()
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == refused
        assert codes.count(None) == PER_REQUESTER + WAITING  # the rest are held open
        # While they are held: another analyst's query, the auditor and a peer node.
        r = Federation.from_file(fed.root / "fed-bob.toml").query(
            "SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="plain"
        )
        assert r.rows[0][0] == 3 * 40 * 36
        assert _checkpoint(fed, 0, "auditor", "regulator").startswith("datafed/ledger/")
        assert _checkpoint(fed, 0, "node", "water-east").startswith("datafed/ledger/")
        # still held: bob was served beside them, not after them
        assert attack.codes().count(None) == PER_REQUESTER + WAITING
        assert all("max_waiting_per_requester" in d for d in attack.details())
    finally:
        attack.close()
    denied = [
        rec
        for rec in _records(fed, north, before)
        if rec.decision == "denied" and rec.requester == "alice"
    ]
    assert len(denied) >= refused
    assert sum(rec.reason.startswith("RESOURCE_EXHAUSTED") for rec in denied) == refused
    assert all(rec.requester_role == "analyst" for rec in denied)


def test_half_open_calls_are_cut_at_the_request_deadline(fed):
    """At water-east (``request_timeout_s = 2``) a call whose request never comes is cut."""
    east = fed.nodes[1].spec.name
    before = len(_records(fed, east))
    attack = HalfOpenCalls(fed, 1)
    try:
        attack.open(3)
        _wait_for("the half-open calls to be cut", lambda: None not in attack.codes())
        assert attack.codes() == [grpc.StatusCode.DEADLINE_EXCEEDED] * 3
        assert all("request_timeout_s" in d for d in attack.details())
    finally:
        attack.close()
    denied = [r for r in _records(fed, east, before) if r.decision == "denied"]
    assert [(r.requester, r.reason.split(":")[0]) for r in denied] == [
        ("alice", "DEADLINE_EXCEEDED")
    ] * 3
    r = Federation.from_file(fed.root / "fed-bob.toml").query(
        "SELECT COUNT(*) FROM pipe_incidents", purpose=PURPOSE, protection="plain"
    )
    assert r.rows[0][0] == 3 * 40 * 36


# ------------------------------------------------------------- 7b: heavy queries
def _heavy(fed: LocalFederation, analyst: str, job_id: str) -> common_pb2.SignedRequest:
    """A Paillier query of about 1,240 ciphertexts, within water-north's limit for one answer.

    The node's own domain (year x month x material as declared, and the remainder) x
    :data:`HISTOGRAMS` of :data:`EDGES` values, under a fresh key per query (any 2048-bit
    odd number will do for the node), so that no query is cheaper for a key the node has
    cached: all nine cost the same.
    """
    certs = [party_paths(fed.pki_dir, "node", n.spec.name).cert.read_bytes() for n in fed.nodes]
    n = random.Random(job_id).getrandbits(2048) | (1 << 2047) | 1
    params = modes_pb2.PaillierParams(
        n=n.to_bytes(256, "big"), peer_certificates=certs, value_bits=64
    ).SerializeToString()
    protection = query_pb2.Protection(mode="paillier", fixed_point_bits=16, params=params)
    spec = query_pb2.QuerySpec(
        dataset="pipe_incidents",
        group_by=["year", "month", "material"],
        aggregates=[
            query_pb2.Aggregate(func="histogram", column="bursts", bins=list(range(k, k + EDGES)))
            for k in range(HISTOGRAMS)
        ],
    )
    name = fed.nodes[0].spec.name
    return signed_query(
        fed, name, spec=spec, analyst=analyst, job_id=job_id, protection=protection
    ).request


def test_one_requesters_heavy_queries_do_not_starve_another(fed):
    north = fed.nodes[0].spec.name
    before = len(_records(fed, north))
    finished: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def ask(analyst: str, request: common_pb2.SignedRequest) -> None:
        ch, stub = query_stub(fed, 0, analyst)
        with ch:
            try:
                stub.Query(request, timeout=900)
            except grpc.RpcError as exc:
                with lock:
                    errors.append(f"{analyst}: {exc.code().name} {exc.details()}")
                return
        with lock:
            finished.append(analyst)

    alice = [_heavy(fed, "alice", f"job-heavy-{i}") for i in range(8)]
    threads = [threading.Thread(target=ask, args=("alice", a)) for a in alice]
    for t in threads:
        t.start()
    # Bob asks once all eight of alice's queries are admitted (and so in the node's hands).
    _wait_for(
        "alice's eight queries to be admitted",
        lambda: (
            bool(errors)
            or sum(
                r.decision == "approved" and r.requester == "alice"
                for r in _records(fed, north, before)
            )
            == 8
        ),
    )
    assert errors == []
    bob = threading.Thread(target=ask, args=("bob", _heavy(fed, "bob", "job-heavy-bob")))
    bob.start()
    for t in (*threads, bob):
        t.join(900)
    assert errors == []
    assert sorted(finished) == ["alice"] * 8 + ["bob"]
    # Bob's query, as costly as each of alice's, is served beside hers, not after them:
    # without fair shares it finishes ninth. Beside alice's one compute thread it runs at
    # about half speed (gmpy2 holds the interpreter lock), so it finishes within about two
    # of her queries; at least half of hers finish after it, even on a busy machine.
    assert finished.index("bob") <= 4, finished
