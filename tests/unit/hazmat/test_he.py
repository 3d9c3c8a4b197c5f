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


def _doubled(ctx: HeContext, x: np.ndarray, times: int) -> np.ndarray:
    """Encrypt ``x`` under the public context and add the sum to itself ``times`` times."""
    v = HePublicContext.from_bytes(ctx.public_bytes()).encrypt(x)
    for _ in range(times):
        v = v + v
    got = ctx.decrypt(v)
    assert v.additions == 1 << times
    return np.abs(got.values - x * (1 << times)) / got.error_bound


def test_sums_only_parameters_take_the_fewest_primes_and_hold_the_total() -> None:
    """``for_sums``: [60, 40, 60] up to value_bound 2^48 at 1024 additions (the total at
    the bound decrypts within the error bound), [60, 40, 40, 60] above; both well within
    the HE standard's 128-bit limit (log q <= 218 at N = 8192)."""
    from datafed.modes._ckks import MAX_COEFF_MODULUS_BITS, _load_context

    assert HeParams.for_sums(2.0**30).coeff_mod_bit_sizes == (60, 40, 60)
    assert HeParams.for_sums(2.0**48).coeff_mod_bit_sizes == (60, 40, 60)
    assert HeParams.for_sums(2.0**48.5).coeff_mod_bit_sizes == (60, 40, 40, 60)
    assert HeParams.for_sums(2.0**51).coeff_mod_bit_sizes == (60, 40, 40, 60)
    small = HeParams.for_sums(2.0**48)
    assert sum(small.coeff_mod_bit_sizes) <= MAX_COEFF_MODULUS_BITS[small.poly_modulus_degree]
    assert small.fresh_error() == HeParams(value_bound=2.0**48).fresh_error()
    ctx = HeContext.generate(small)
    _load_context(ctx.public_bytes(), 3)  # a node's security checks accept it
    # Every slot at the bound: the constant coefficient is scale x bound, the worst case.
    x = np.full(small.slots, 2.0**48)
    assert (_doubled(ctx, x, 10) <= 1).all()  # 1024 additions at the bound
    assert (_doubled(ctx, -x, 10) <= 1).all()
    # Not a loose rule: twice the bound overflows the data level of [60, 40, 60].
    over = HeParams(coeff_mod_bit_sizes=(60, 40, 60), value_bound=2.0**49)
    assert (_doubled(HeContext.generate(over), 2 * x, 10) > 1).all()
