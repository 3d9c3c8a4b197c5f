"""The draft's XOFs (§6.2) beyond the known-answer vectors: streaming, domain separation, limits."""

from __future__ import annotations

from hashlib import sha256

import pytest
from Crypto.Hash import TurboSHAKE128

from datafed.hazmat import (
    Field64,
    Field128,
    XofFixedKeyAes128,
    XofTurboShake128,
    decode_columns,
    encode_columns,
    format_dst,
    xof_many,
)
from datafed.hazmat._xof import turboshake

XOFS = [XofTurboShake128, XofFixedKeyAes128]


def test_format_dst_layout() -> None:
    # §6.2.3: VERSION (18), class, 4-byte id, 2-byte usage, all big-endian.
    assert format_dst(0, 0x00000004, 7) == bytes([18, 0, 0, 0, 0, 4, 0, 7])
    assert format_dst(1, 0xFFFFFFFF, 0x0102) == bytes([18, 1, 255, 255, 255, 255, 1, 2])


def test_turboshake_message_layout() -> None:
    # §6.2.1: le16(len(dst)) || dst || le8(len(seed)) || seed || binder, domain byte 1.
    seed, dst, binder = bytes(range(32)), b"dst", b"binder"
    msg = len(dst).to_bytes(2, "little") + dst + bytes([32]) + seed + binder
    expected = TurboSHAKE128.new(domain=1, data=msg).read(50)
    assert XofTurboShake128(seed, dst, binder).next(50) == expected


@pytest.mark.parametrize("xof", XOFS)
def test_stream_is_independent_of_read_sizes(xof: type[XofTurboShake128]) -> None:
    seed = bytes(range(xof.SEED_SIZE))
    whole = xof(seed, b"d", b"b").next(100)
    x = xof(seed, b"d", b"b")
    assert b"".join(x.next(k) for k in (0, 1, 15, 16, 17, 3, 48)) == whole
    # Each input moves the output.
    other_seed = bytes([1]) + seed[1:]
    assert xof(other_seed, b"d", b"b").next(100) != whole
    assert xof(seed, b"e", b"b").next(100) != whole
    assert xof(seed, b"d", b"c").next(100) != whole


@pytest.mark.parametrize("xof", XOFS)
def test_next_vec_rejection_sampling_is_streaming(xof: type[XofTurboShake128]) -> None:
    seed = sha256(b"seed").digest()[: xof.SEED_SIZE]
    for field in (Field64, Field128):
        one = xof(seed, b"d", b"b").next_vec(field, 40)
        x = xof(seed, b"d", b"b")
        parts = x.next_vec(field, 7) + x.next_vec(field, 33)
        assert one == parts
        assert all(0 <= v < field.MODULUS for v in one)


def test_seed_and_dst_limits() -> None:
    with pytest.raises(ValueError):
        XofFixedKeyAes128(bytes(15), b"", b"")
    with pytest.raises(ValueError):
        XofTurboShake128(bytes(256), b"", b"")
    with pytest.raises(ValueError):
        XofTurboShake128(bytes(32), bytes(65536), b"")
    # Other seed lengths up to 255 are allowed by §6.2.1 and change the output.
    assert XofTurboShake128(bytes(16), b"", b"").next(8) != XofTurboShake128(
        bytes(32), b"", b""
    ).next(8)


def test_xof_many_equals_one_xof_per_seed() -> None:
    dst, binders = format_dst(0, 4, 3), [b"", b"b" * 300, bytes(range(17))]
    for seeds in ([bytes(32), b"\x01" * 32, b"\x02" * 32], [b"", b"x", b"y" * 255]):
        for length in (0, 16, 1600):
            want = [
                XofTurboShake128(s, dst, b).next(length)
                for s, b in zip(seeds, binders, strict=True)
            ]
            assert xof_many(seeds, dst, binders, length) == want
    assert xof_many([], dst, [], 32) == []
    with pytest.raises(ValueError, match="one binder per seed"):
        xof_many([bytes(32)], dst, [], 32)
    with pytest.raises(ValueError, match="255"):
        xof_many([bytes(256)], dst, [b""], 32)
    messages = [b"", b"m" * 1000, bytes(range(200))]
    ts = turboshake()
    assert ts.digest_many(messages, 40, 2) == [ts.digest(m, 40, 2) for m in messages]
    assert ts.digest(b"abc", 32) == TurboSHAKE128.new(domain=1, data=b"abc").read(32)


def test_wide_columns_decode_known_answer() -> None:
    p = Field128.MODULUS
    values = [[0, 1, p - 1], [2**64, 2**127 + 5, 123456789 << 70]]
    data = b"".join(x.to_bytes(16, "little") for row in values for x in row)
    cols, ok = decode_columns(Field128, data, 2, 3)
    assert cols.shape == (3, 2) and ok.all()
    assert [[int(x) for x in cols[:, j]] for j in range(2)] == values
    assert encode_columns(Field128, cols) == data
    bad = data[:16] + p.to_bytes(16, "little") + data[32:]  # an element equal to p
    assert decode_columns(Field128, bad, 2, 3)[1].tolist() == [False, True]
