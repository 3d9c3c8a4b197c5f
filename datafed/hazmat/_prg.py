"""Seed expansion: AES-128-CTR as a pseudorandom generator, HKDF for derived seeds.

A 16-byte seed is an AES-128 key; the PRG output is the CTR keystream under an
all-zero initial counter block (NIST SP 800-38A §6.5), i.e. the encryption of
zeros.  Each seed must be used for one stream only: callers derive distinct
seeds per purpose with :func:`derive_seed` (HKDF-SHA256, RFC 5869).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED_BYTES = 16
"""Seed length: an AES-128 key (NIST SP 800-38A with FIPS 197)."""

_ZERO_COUNTER = bytes(16)


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, (bytes, bytearray)):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")


def prg_bytes(seed: bytes, nbytes: int, *, counter_block: bytes = _ZERO_COUNTER) -> bytes:
    """Expand ``seed`` into ``nbytes`` pseudorandom bytes (AES-128-CTR keystream).

    Parameters
    ----------
    seed : bytes
        A 16-byte seed (the AES key).
    nbytes : int
        Output length.
    counter_block : bytes, optional
        Initial 16-byte counter block; all zeros by default (known-answer tests
        set it to the NIST SP 800-38A F.5.1 value).

    Returns
    -------
    bytes
        The keystream.
    """
    _check_seed(seed)
    if nbytes < 0:
        raise ValueError(f"nbytes must be non-negative, got {nbytes}")
    encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(counter_block)).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


def prg_uint64(seed: bytes, count: int) -> npt.NDArray[np.uint64]:
    """Expand ``seed`` into ``count`` uniform elements of ``Z_2^64`` (little-endian words).

    Parameters
    ----------
    seed : bytes
        A 16-byte seed.
    count : int
        Number of ring elements.

    Returns
    -------
    numpy.ndarray
        A ``uint64`` array of length ``count`` (little-endian words of the keystream).
    """
    _check_seed(seed)
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    # Encrypt a zeroed buffer in place: CTR keystream XOR 0, with no extra allocation
    # (OpenSSL's EVP interface allows the input and output buffers to coincide).
    # Two spare words leave the block_size - 1 bytes of slack update_into asks for.
    out = np.zeros(count + 2, dtype="<u8")
    view = memoryview(out.data).cast("B")
    encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(_ZERO_COUNTER)).encryptor()
    encryptor.update_into(view[: 8 * count], view)
    return out[:count].astype(np.uint64, copy=False)


def derive_seed(key_material: bytes, label: bytes, *, length: int = SEED_BYTES) -> bytes:
    """Derive a seed from shared key material with HKDF-SHA256 (RFC 5869).

    Parameters
    ----------
    key_material : bytes
        Input keying material (e.g. an X25519 shared secret).
    label : bytes
        The HKDF ``info``: names the purpose, so each purpose gets its own seed.
    length : int, optional
        Output length in bytes (default 16).

    Returns
    -------
    bytes
        The derived seed.
    """
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(
        key_material
    )
