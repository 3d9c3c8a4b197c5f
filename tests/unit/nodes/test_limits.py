"""Resource limits in isolation: the Paillier key cache, cost estimates, quotas, sizes."""

from __future__ import annotations

import random
import subprocess
import sys
import threading

import pytest

from datafed.hazmat import PaillierPublicKey, generate_paillier_keypair
from datafed.modes import CkksMode, PaillierMode, PlainMode, SharesMode
from datafed.modes._paillier_keys import CACHED_WINDOW, POOL_SIZE, PaillierKeyCache, table_bytes
from datafed.proto.v1 import common_pb2, modes_pb2, query_pb2
from datafed.query.components import components
from datafed.query.spec import Aggregate, QuerySpec
from datafed.query.sql import parse_sql
from datafed.wire.serde import where_size
from nodes.config import DatasetPolicy, LimitsSection
from nodes.errors import InvalidRequest, PermissionDenied, Unavailable
from nodes.limits import QuotaExceeded, check_cost, check_paillier_key, check_query_fields, estimate
from nodes.psi.jobs import PendingJob, PendingJobs

MiB = 1 << 20
LIMITS = LimitsSection()


def modulus(bits: int, seed: int) -> int:
    return random.Random(seed).getrandbits(bits) | (1 << (bits - 1)) | 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def use(cache: PaillierKeyCache, owner: str, n: int) -> PaillierPublicKey:
    with cache.use(owner, n) as key:
        return key


# ------------------------------------------------------------------ key cache
def test_a_key_is_cached_on_its_second_use_only():
    cache = PaillierKeyCache(max_bytes=512 * MiB)
    n = modulus(2048, 1)
    first = use(cache, "alice", n)
    assert cache.keys_of("alice") == [] and cache.bytes == 0  # fresh key: no large table
    second = use(cache, "alice", n)
    assert cache.keys_of("alice") == [n] and cache.bytes == table_bytes(2048, CACHED_WINDOW)
    assert use(cache, "alice", n) is second and first is not second
    assert first.n == second.n == n


def test_a_new_key_evicts_the_requesters_own_never_anothers():
    cache = PaillierKeyCache(max_bytes=512 * MiB, per_requester=1)
    bob_key = modulus(2048, 0)
    use(cache, "bob", bob_key)
    use(cache, "bob", bob_key)
    for i in range(1, 6):  # alice rotates keys, each used twice
        use(cache, "alice", modulus(2048, i))
        use(cache, "alice", modulus(2048, i))
        assert cache.keys_of("alice") == [modulus(2048, i)]
        assert cache.keys_of("bob") == [bob_key]
    assert cache.bytes == 2 * table_bytes(2048, CACHED_WINDOW)


def test_the_byte_budget_holds_and_only_idle_keys_expire_to_make_room():
    clock = Clock()
    cache = PaillierKeyCache(
        max_bytes=table_bytes(2048, CACHED_WINDOW) + MiB, idle_s=60, clock=clock
    )
    a, b = modulus(2048, 1), modulus(2048, 2)
    use(cache, "alice", a)
    use(cache, "alice", a)
    use(cache, "bob", b)
    assert use(cache, "bob", b).n == b  # served, but one-off: no room
    assert cache.keys_of("bob") == [] and cache.keys_of("alice") == [a]
    clock.now += 61  # alice's key idles out
    use(cache, "bob", b)
    assert cache.keys_of("bob") == [b] and cache.keys_of("alice") == []
    assert cache.bytes <= cache.max_bytes


def test_a_key_in_use_is_never_evicted():
    cache = PaillierKeyCache(max_bytes=512 * MiB, per_requester=1)
    a, b = modulus(2048, 1), modulus(2048, 2)
    use(cache, "alice", a)
    with cache.use("alice", a) as held:
        use(cache, "alice", b)
        use(cache, "alice", b)  # would evict a, but a is in use: b stays one-off
        assert cache.keys_of("alice") == [a]
        assert held.n == a
    use(cache, "alice", b)
    assert cache.keys_of("alice") == [b]


MEASURE = """
import gc, random, sys
from datafed.hazmat import PaillierPublicKey

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

gc.collect()
before = rss()
key = PaillierPublicKey(random.Random(7).getrandbits(2048) | (1 << 2047) | 1)
key.precompute()
print(rss() - before)
"""
# The estimate in the same process: it depends on which layout the table took.
ESTIMATE = """
from datafed.modes._paillier_keys import table_bytes
print(table_bytes(2048))
"""


@pytest.mark.parametrize("native", ["1", "0"], ids=["c-loop", "python"])
def test_the_table_estimate_matches_the_memory_measured(native: str) -> None:
    """One real 2048-bit table, in a fresh process: the estimate is within 10% above.

    Both layouts: the C loop's array of limbs and the Python lists of gmpy2 objects.
    """
    script = f"from datafed.hazmat import use_native\nuse_native({native == '1'})\n"
    out = subprocess.run(
        [sys.executable, "-c", script + MEASURE + ESTIMATE], capture_output=True, check=True
    )
    grown, estimate = map(int, out.stdout.split())
    assert grown <= estimate <= 1.1 * grown, (grown / MiB, estimate / MiB)


def test_cached_and_one_off_keys_encrypt_alike():
    pub, priv = generate_paillier_keypair(2048)
    cache = PaillierKeyCache(max_bytes=0)  # nothing fits: every use is one-off
    for _ in range(2):
        with cache.use("alice", pub.n) as key:
            assert priv.decrypt(pub.ciphertext_from_bytes(key.encrypt(42).to_bytes())) == 42
    assert cache.bytes == 0


def test_concurrent_uses_share_one_entry():
    cache = PaillierKeyCache(max_bytes=512 * MiB)
    n = modulus(2048, 3)
    use(cache, "alice", n)
    keys: list[PaillierPublicKey] = []
    threads = [
        threading.Thread(target=lambda: keys.append(use(cache, "alice", n))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(k) for k in keys}) == 1 and cache.bytes == table_bytes(2048, CACHED_WINDOW)


# ------------------------------------------------------------- Paillier key size
def test_key_sizes_are_the_policys():
    policy = DatasetPolicy(paillier_bits=[3072])
    params = modes_pb2.PaillierParams(n=modulus(3072, 1).to_bytes(384, "big")).SerializeToString()
    assert check_paillier_key(params, policy, "d") == 3072
    params = modes_pb2.PaillierParams(n=modulus(2048, 1).to_bytes(256, "big")).SerializeToString()
    with pytest.raises(PermissionDenied, match="2048 bits; dataset 'd' accepts keys of 3072"):
        check_paillier_key(params, policy, "d")
    with pytest.raises(InvalidRequest, match="at least 2048 bits"):
        check_paillier_key(b"\x0a\x01\x07", policy, "d")
    with pytest.raises(InvalidRequest, match="malformed Paillier parameters"):
        check_paillier_key(b"\xff\xff", policy, "d")


# ---------------------------------------------------------------------- cost
def cost(sql: str, mode, params: bytes = b"", keys: int | None = None, roster: int = 3):
    spec = parse_sql(sql)
    return estimate(spec, components(spec), mode, params, keys, 0, roster, LIMITS)


def test_cost_counts_groups_components_ciphertexts_and_bytes():
    sql = "SELECT year, SUM(bursts), AVG(repair_hours) FROM t GROUP BY year"
    c = cost(sql, PlainMode, keys=100)
    # sum and non-null count of each column
    assert (c.groups, c.components, c.values, c.ciphertexts) == (100, 4, 400, 0)
    params = modes_pb2.PaillierParams(
        n=modulus(2048, 1).to_bytes(256, "big"), peer_certificates=[b"x"] * 3
    ).SerializeToString()
    c = cost(sql, PaillierMode, params, keys=100)
    # 2047 usable bits / (64 + 2 headroom + 1 guard) = 30 values per plaintext
    assert c.ciphertexts == 14 and c.answer_bytes == 14 * (512 + 4)
    c = cost(sql, SharesMode, keys=100, roster=5)
    assert c.answer_bytes == 401 * 9 * 5
    undeclared = cost(sql, PlainMode)
    assert undeclared.groups == LIMITS.max_groups
    check_cost(undeclared, LIMITS, 16 * MiB)


def test_over_the_limits_is_refused_with_the_field_named():
    # 9 HISTOGRAMs of 64 bins: more than the SQL front end accepts, so built directly
    spec = QuerySpec(
        dataset="t",
        aggregates=tuple(
            Aggregate(func="histogram", column="x", bins=tuple(1000.0 * i + j for j in range(65)))
            for i in range(9)
        ),
    )
    c = estimate(spec, components(spec), PlainMode, b"", None, 0, 3, LIMITS)
    assert c.components == 576
    with pytest.raises(InvalidRequest, match=r"576 values per group .*limits.max_components"):
        check_cost(c, LIMITS, 16 * MiB)
    many = cost(
        "SELECT g, SUM(x), COUNT(x), MIN(x), MAX(x) FROM t GROUP BY g", PlainMode, keys=60_000
    )
    with pytest.raises(InvalidRequest, match=r"240,000 values.*limits.max_values"):
        check_cost(many, LIMITS, 16 * MiB)
    params = modes_pb2.PaillierParams(n=modulus(2048, 1).to_bytes(256, "big")).SerializeToString()
    cts = cost("SELECT g, SUM(x), COUNT(x) FROM t GROUP BY g", PaillierMode, params, keys=70_000)
    with pytest.raises(InvalidRequest, match=r"ciphertexts.*limits.max_ciphertexts"):
        check_cost(cts, LIMITS, 16 * MiB)
    big = cost("SELECT g, SUM(x) FROM t GROUP BY g", CkksMode, b"", keys=50_000, roster=8)
    with pytest.raises(InvalidRequest, match=r"MiB; this node sends at most 15.9 MiB"):
        check_cost(big, LIMITS, 16 * MiB)
    check_cost(big, LIMITS.model_copy(update={"max_answer_bytes": 1 << 30}), 16 * MiB)


def test_request_fields_are_bounded_before_decoding():
    body = query_pb2.QueryRequestBody()
    body.spec.dataset = "t"
    check_query_fields(body, LIMITS)
    body.protection.params = b"\x00" * (LIMITS.max_params_bytes + 1)
    with pytest.raises(InvalidRequest, match=r"limits\.max_params_bytes"):
        check_query_fields(body, LIMITS)
    body.protection.params = b""
    body.sign_offs.add().statement = b"\x00" * (LIMITS.max_signoff_bytes + 1)
    with pytest.raises(InvalidRequest, match=r"limits\.max_signoff_bytes"):
        check_query_fields(body, LIMITS)


def test_where_size_counts_without_recursion_and_stops_early():
    lit = common_pb2.Literal(int_value=1)
    leaf = query_pb2.Predicate(comparison=query_pb2.Comparison(column="x", op="=", value=lit))
    deep = leaf
    for _ in range(90):  # as deep as protobuf itself will parse
        outer = query_pb2.Predicate()
        outer.negate.CopyFrom(deep)
        deep = outer
    assert where_size(deep, 1000) == (91, 1)
    wide = query_pb2.Predicate()
    wide.all_of.items.extend([leaf] * 100_000)
    nodes, _ = where_size(wide, 256)
    assert nodes > 256


# -------------------------------------------------------------------- quotas
def test_pending_intersections_per_requester():
    jobs = PendingJobs(limit=4, per_requester=2)
    mk = lambda who: PendingJob(None, who, "p", b"", 0)  # type: ignore[arg-type]  # noqa: E731
    jobs.put("a", mk("alice"))
    jobs.put("b", mk("alice"))
    with pytest.raises(QuotaExceeded, match="max_pending_intersections_per_requester"):
        jobs.ensure_room("alice", "c")
    jobs.put("a", mk("bob"))
    jobs.put("b", mk("bob"))
    with pytest.raises(Unavailable, match="4 intersection-sum jobs are in progress"):
        jobs.ensure_room("carol", "a")
    jobs.pop("alice", "a")
    jobs.put("c", mk("alice"))


def test_limits_section_is_validated():
    with pytest.raises(ValueError, match="must not exceed max_open_jobs"):
        LimitsSection(max_open_jobs=4, max_open_jobs_per_requester=5)
    with pytest.raises(ValueError, match="max_components"):
        LimitsSection(max_components=5000)


def test_a_cached_keys_table_is_built_off_the_answers_path():
    pub, priv = generate_paillier_keypair(2048)
    cache = PaillierKeyCache(max_bytes=512 * MiB)
    use(cache, "alice", pub.n)  # first use: a one-off key
    with cache.use("alice", pub.n) as key:  # second use: cached, its table built on a thread
        early = key.encrypt(7)  # answered at once (from a narrow table until it is ready)
        key.precompute()  # wait for the cached table
        assert key._table is not None and key._table.window == CACHED_WINDOW
        late = key.encrypt(8)
    assert priv.decrypt(early) == 7 and priv.decrypt(late) == 8


def _until(cond: object, what: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_cached_key_keeps_randomizers_ready_each_used_once():
    pub, priv = generate_paillier_keypair(2048)
    cache = PaillierKeyCache(max_bytes=512 * MiB)
    use(cache, "alice", pub.n)  # first use: a one-off key, no pool
    with cache.use("alice", pub.n) as key:
        key.precompute()  # the wide table, then the pool fills on a thread
        _until(lambda: key.pooled == POOL_SIZE, "the pool never filled")
        ready = list(key._pool)
        cts = [key.encrypt(m) for m in range(5)]
        assert key.pooled == POOL_SIZE - 5  # one randomizer per encryption, removed
        assert len({int(r) for r in ready}) == POOL_SIZE  # each drawn afresh
        # Each ciphertext is m's encoding times one of the pooled randomizers, the
        # last ones first, and decrypts to m.
        n2 = pub.n * pub.n
        for m, (ct, r) in enumerate(zip(cts, reversed(ready), strict=False)):
            assert priv.decrypt(ct) == m
            assert int(ct) == (1 + m * pub.n) * int(r) % n2
    _until(lambda: key.pooled == POOL_SIZE, "the pool was not refilled after the answer")
    assert not ({int(r) for r in key._pool} & {int(r) for r in ready[-5:]})  # never reused
