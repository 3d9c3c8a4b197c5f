"""Red team, round 6: fuzzing the C loop of DJN tables (``datafed.hazmat._djn_native``).

An outsider's probes of ``build`` and ``power`` with random and adversarial arguments:
buffer sizes, windows, rows, exponent and shift lengths, moduli whose top limb is zero or
small, even moduli, garbage tables, a table resized by another thread during a call.
Each batch runs in a subprocess so that a crash shows as a negative return code instead
of taking pytest down. Safe: no batch crashes, every bad argument is a clear Python
exception, and every accepted call returns the value ``pow`` gives (and the Python
path gives, bit for bit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datafed.hazmat import native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="the C loop is not built")

ROOT = Path(__file__).resolve().parents[3]

PRELUDE = """
import random, threading
from datafed.hazmat import _djn_native as m

CLEAR = (ValueError, TypeError, OverflowError, MemoryError, BufferError)


def le(x, nbytes):
    return x.to_bytes(nbytes, "little")


def val(b):
    return int.from_bytes(b, "little")


r = random.Random(27)
n = r.getrandbits(2048) | (1 << 2047) | 1
while n % 3 == 0:
    n += 2
N = le(n, 256)
n2 = n * n
B = le(3, 512)
T = m.build(N, B, 4, 4)


def refused(f, words):
    try:
        f()
    except CLEAR as e:
        assert any(w in str(e) for w in words) or isinstance(e, (TypeError, OverflowError, \
MemoryError, BufferError)), repr(e)
        return
    raise AssertionError("accepted")
"""


def run_batch(body: str, timeout: float = 60) -> str:
    """Run ``body`` after PRELUDE in a fresh interpreter; fail on a crash or an error."""
    src = PRELUDE + textwrap.dedent(body) + "\nprint('DONE')\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DATAFED_NATIVE", None)
    p = subprocess.run(
        [sys.executable, "-c", src],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert p.stdout.rstrip().endswith("DONE"), p.stdout[-2000:]
    return p.stdout


def test_build_refuses_every_malformed_argument_cleanly() -> None:
    """Moduli of no limbs, odd byte lengths, more than 256 limbs, a zero top limb; bases of
    the wrong size or not units; rows and windows out of range (negative, zero, huge,
    overflowing a product); a 2^20 x 2^16 table (MemoryError, not a crash)."""
    run_batch(
        """
        modulus = ("limbs", "top limb")
        refused(lambda: m.build(b"", b"", 4, 4), modulus)
        refused(lambda: m.build(N[:255], B[:510], 4, 4), modulus)
        refused(lambda: m.build(bytes(257 * 8), bytes(514 * 8), 1, 1), modulus)
        refused(lambda: m.build(le(n >> 64, 256), B, 4, 4), modulus)
        refused(lambda: m.build(bytes(256), B, 4, 4), modulus)
        for base in (le(3, 256), le(3, 600), b""):
            refused(lambda: m.build(N, base, 4, 4), ("base",))
        # base: two base-n digits (x0, x1); x0 = 0 mod n is no unit
        for base in (bytes(512), le(n, 256) + bytes(256), bytes(256) + le(5, 256),
                     le(n, 256) + le(1, 256)):
            refused(lambda: m.build(N, base, 4, 4), ("unit",))
        for rows, w in [(0, 4), (-1, 4), (4, 0), (4, 17), (4, -1), (4, 64),
                        (2**20 + 1, 1), (2**40, 4), (2**62, 16)]:
            refused(lambda: m.build(N, B, rows, w), ("window", "rows"))
        for rows in (2**64, 2**200, -(2**70)):
            refused(lambda: m.build(N, B, rows, 4), ())
        refused(lambda: m.build("n", B, 4, 4), ())
        refused(lambda: m.build(N, B, 4.0, 4), ())
        refused(lambda: m.build(le(3, 8), le(2, 16), 2**20, 16), ())
        """
    )


def test_power_refuses_every_malformed_argument_cleanly() -> None:
    """Tables of the wrong size (a byte or a limb short or long, rows/window that do not
    match), exponents longer than the table serves, shifts of the wrong size or not below n,
    a different or zero-top-limb modulus, non-contiguous views."""
    run_batch(
        """
        E = lambda x, nb=2: le(x, nb)
        size = ("size", "match")
        for t in (T[:-1], T[:-8], T + bytes(8), b""):
            refused(lambda: m.power(t, N, 4, 4, E(5)), size)
        for rows, w in [(5, 4), (3, 4), (8, 2), (2, 8), (1, 16)]:
            refused(lambda: m.power(T, N, rows, w, E(5)), size + ("window", "rows"))
        for e in (E(1, 3), E(1 << 20, 3), b"\\xff" * 100000):
            refused(lambda: m.power(T, N, 4, 4, e), ("exponent",))
        for s in (le(n, 256), b"\\xff" * 256, le(1, 512), le(1, 3), b"", le(1, 255)):
            refused(lambda: m.power(T, N, 4, 4, E(5), s), ("shift",))
        for nn in (le(n >> 64, 256), bytes(256), N[:248], N[:255]):
            refused(lambda: m.power(T, nn, 4, 4, E(5)), size + ("modulus", "limb"))
        refused(lambda: m.power(memoryview(T + T)[::2], N, 4, 4, E(5)), ())
        refused(lambda: m.power("t", N, 4, 4, E(5)), ())
        refused(lambda: m.power(T, N, 2**70, 4, E(5)), ())
        refused(lambda: m.power(T, N, -4, 4, E(5)), ("window", "rows"))
        """
    )


def test_power_agrees_with_pow_at_the_edges() -> None:
    """Exponents 0, the largest, an empty buffer; shifts 0 and n-1; moduli whose top limb
    is 1 (2^1984 + 1, a 66-bit n), all-ones, n - 2; bases whose digits are not reduced
    (x0 or x1 >= n). An even n or n = 1 is refused (Montgomery's method needs an odd
    modulus; every Paillier modulus is odd and far above 3)."""
    run_batch(
        """
        E = lambda x, nb=2: le(x, nb)
        assert val(m.power(T, N, 4, 4, b"")) == 1
        assert val(m.power(T, N, 4, 4, E(0))) == 1
        assert val(m.power(T, N, 4, 4, E(0xFFFF))) == pow(3, 0xFFFF, n2)
        assert val(m.power(T, N, 4, 4, E(0xFFFF), le(n - 1, 256))) == (
            pow(3, 0xFFFF, n2) * (1 + (n - 1) * n) % n2)
        for nn in ((1 << 1984) + 1, (1 << 2047) + 1, 2**2048 - 1, (1 << 64) * 3 + 1,
                   (1 << 64) + 1, n - 2, 2**3072 - 3, 3, 5):
            nb = (nn.bit_length() + 63) // 64 * 8
            base = next(b for b in (2, 3, 5, 7, 11, 13) if nn % b)
            tt = m.build(le(nn, nb), le(base, 2 * nb), 4, 4)
            for _ in range(5):
                e, s = r.getrandbits(16), r.randrange(nn)
                got = val(m.power(tt, le(nn, nb), 4, 4, E(e), le(s, nb)))
                assert got == pow(base, e, nn * nn) * (1 + s * nn) % (nn * nn), nn
        for x0, x1 in ((3, 5), (n + 3, 0), (3, n + 1), (2**2048 - 1, 2**2048 - 1)):
            tt = m.build(N, le(x0, 256) + le(x1, 256), 4, 4)
            for e in (1, 2, 0x105, 0xFFFF):
                assert val(m.power(tt, N, 4, 4, E(e))) == pow(x0 + x1 * n, e, n2)
        for bad in (1, 2, n - 1, 1 << 64):
            nb = (bad.bit_length() + 63) // 64 * 8
            for call in (lambda: m.build(le(bad, nb), le(1, 2 * nb), 4, 4),
                         lambda: m.power(T, le(bad, nb), 4, 4, E(5))):
                try:
                    call()
                except ValueError as exc:
                    assert "odd" in str(exc), exc
                else:
                    raise AssertionError(f"modulus {bad} was accepted")
        """
    )


def test_random_arguments_never_crash() -> None:
    """600 calls with random sizes for every argument (near the valid ones half the time),
    random tables (garbage entries: x0 >= n, deltas >= n) and random moduli."""
    run_batch(
        """
        def near(k):
            return max(0, k + r.choice((0, 0, 0, -1, 1, -8, 8, r.randrange(-k, k + 1))))
        seen = {"ok": 0, "refused": 0}
        for i in range(600):
            limbs = r.choice((1, 2, 4, 32, 48))
            w = r.choice((1, 2, 4, 5, r.randrange(-2, 20)))
            rows = r.choice((1, 2, 3, r.randrange(-2, 6)))
            nb = near(8 * limbs) if r.random() < 0.5 else 8 * limbs
            nn = r.randbytes(nb)
            try:
                if r.random() < 0.3:
                    out = m.build(nn, r.randbytes(near(2 * nb)), rows, w)
                    assert len(out) == rows * (1 << w) * 2 * nb
                else:
                    tsize = rows * (1 << max(w, 0) if 0 <= w < 20 else 1) * 2 * nb
                    t = r.randbytes(near(tsize) if r.random() < 0.3 else tsize)
                    ebytes = near(max(rows * max(w, 0), 0) // 8)
                    args = [t, nn, rows, w, r.randbytes(ebytes)]
                    if r.random() < 0.7:
                        args.append(r.randbytes(near(nb) if r.random() < 0.3 else nb))
                    out = m.power(*args)
                    assert len(out) == 2 * nb
                seen["ok"] += 1
            except CLEAR:
                seen["refused"] += 1
        assert seen["ok"] > 50 and seen["refused"] > 50, seen
        """
    )


def test_a_table_cannot_be_resized_while_power_reads_it() -> None:
    """Channel: power releasing the GIL while another thread shrinks the table (a read
    after free). Safe: the resize is refused (BufferError) while a power holds the buffer,
    and every power either matches pow or refuses a table of the wrong size."""
    run_batch(
        """
        t = bytearray(T)
        stop = False
        def resize():
            while not stop:
                try:
                    del t[len(T) // 2:]
                    t.extend(T[len(T) // 2:])
                except BufferError:
                    pass
        th = threading.Thread(target=resize)
        th.start()
        try:
            for i in range(300):  # each checks a 4096-bit pow in Python: ~1 s in all
                e = i * 31 % 65536
                try:
                    assert val(m.power(t, N, 4, 4, le(e, 2))) == pow(3, e, n2)
                except ValueError as err:
                    assert "size" in str(err)
        finally:
            stop = True
            th.join()
        """
    )


def test_c_and_python_paths_agree_bit_for_bit_on_random_exponents_and_shifts() -> None:
    """Channel: a bias or error in the C path that the Python path does not have (a
    ciphertext distinguishable by path). Safe: equal results for 200 random exponents and
    shifts at 2048 bits and 40 at 3072 bits, including n whose top limb is 1."""
    run_batch(
        """
        import gmpy2
        from datafed.hazmat._djn import FixedBaseTable
        for bits, nn, count in ((2048, n, 200), (3072, (1 << 3071) + (1 << 3008) + 1, 40),
                                (2048, (1 << 2047) + 1 + (1 << 1985), 40)):
            nz = gmpy2.mpz(nn)
            base = gmpy2.mpz(3 if nn % 3 else 5)
            c = FixedBaseTable(base, nz * nz, bits // 2, 5, root=nz, native=True)
            p = FixedBaseTable(base, nz * nz, bits // 2, 5, root=nz, native=False)
            assert c.native and not p.native
            for _ in range(count):
                e, s = r.getrandbits(bits // 2), r.randrange(nn)
                assert c.power(e, s) == p.power(e, s) == pow(base, e, nz * nz) * (1 + s * nz) % (nz * nz)
        """,
        timeout=120,
    )


def test_a_float_exponent_is_refused_by_both_paths() -> None:
    """Red team finding 1 (low, fixed): the C path truncated a float exponent.

    Channel: the public ``FixedBaseTable.power`` as an API. An exponent that is not an
    int is a caller's bug (a float from an estimate, a bool); silently truncating it
    draws randomness from fewer values than asked. Safe: both paths raise TypeError."""
    import gmpy2

    from datafed.hazmat._djn import FixedBaseTable

    n = gmpy2.mpz(2**2047 + 9)
    for native in (True, False):
        table = FixedBaseTable(gmpy2.mpz(2), n * n, 64, 4, root=n, native=native)
        with pytest.raises(TypeError):
            table.power(5.7)  # type: ignore[arg-type]


def test_a_base_that_is_no_unit_is_refused_by_both_paths() -> None:
    """Red team finding 2 (low, fixed): the Python path turned a non-unit base into zeros.

    Channel: the table's base as a precondition of semantic security. Safe: both paths
    refuse a base sharing a factor with n (ValueError), instead of one of them returning
    zero randomizers."""
    import gmpy2

    from datafed.hazmat._djn import FixedBaseTable

    n = gmpy2.mpz(2**2047 + 9)
    for native in (True, False):
        with pytest.raises(ValueError, match="unit"):
            FixedBaseTable(n * 3, n * n, 64, 4, root=n, native=native).power(3, 7)
