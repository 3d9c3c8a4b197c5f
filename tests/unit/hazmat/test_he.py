from __future__ import annotations

import numpy as np
import pytest

from datafed.hazmat import HeContext, HeParams, HePublicContext


@pytest.fixture(scope="module")
def ckks() -> HeContext:
    return HeContext.generate()


def test_public_context_has_no_secret_key(ckks: HeContext) -> None:
    public = HePublicContext.from_bytes(ckks.public_bytes())
    assert not public._context.has_secret_key()
    assert not hasattr(public, "decrypt")
    vec = public.encrypt([1.0, 2.0])
    with pytest.raises(ValueError, match="secret"):
        vec.chunks[0].decrypt()  # TenSEAL itself refuses without the secret key


def test_long_vectors_split_and_sum_within_bound(ckks: HeContext) -> None:
    public = HePublicContext.from_bytes(ckks.public_bytes())
    rng = np.random.default_rng(7)
    xs = [rng.uniform(-1000, 1000, 51_200) for _ in range(3)]
    encs = [public.encrypt(x) for x in xs]
    assert len(encs[0].chunks) == 51_200 // 4096 + 1
    total = encs[0] + encs[1] + encs[2]
    wire = public.vector_from_chunks(total.to_chunks(), length=total.length, additions=3)
    result = ckks.decrypt(wire)
    err = np.abs(result.values - sum(xs)).max()
    assert result.values.shape == (51_200,)
    assert result.error_bound == pytest.approx(3 * ckks.params.fresh_error())
    assert err <= result.error_bound
    assert result.error_bound < 1e-3


def test_value_bound_and_shape_checks(ckks: HeContext) -> None:
    with pytest.raises(ValueError, match="magnitude at most"):
        ckks.encrypt([2.0**21])
    with pytest.raises(ValueError, match="empty"):
        ckks.encrypt([])
    a, b = ckks.encrypt([1.0, 2.0]), ckks.encrypt([1.0])
    with pytest.raises(ValueError, match="differ in length"):
        a + b
    with pytest.raises(ValueError, match="chunk count"):
        ckks.vector_from_chunks(a.to_chunks(), length=5000)


def test_public_bytes_rejects_secret_context(ckks: HeContext) -> None:
    with pytest.raises(ValueError, match="not a datafed HE public context"):
        HePublicContext.from_bytes(b"garbage")


def test_bfv_is_exact() -> None:
    ctx = HeContext.generate(HeParams(scheme="bfv", value_bound=2**20))
    public = HePublicContext.from_bytes(ctx.public_bytes())
    x = np.arange(-5000, 5000)
    result = ctx.decrypt(public.encrypt(x) + public.encrypt(2 * x))
    assert result.error_bound == 0.0
    assert result.values.tolist() == (3 * x).tolist()
    with pytest.raises(ValueError, match="plain_modulus"):
        HeContext.generate(HeParams(scheme="bfv", value_bound=2**35, max_additions=1024))
