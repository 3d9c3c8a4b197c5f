"""Raw cryptographic primitives ("hazardous materials"): no policy, no I/O.

* Paillier (phe-compatible, DJN fixed-base randomness, CRT decryption) and packing;
* CKKS / BFV vectors on TenSEAL (imported lazily, on first use);
* additive sharing over ``Z_2^64`` with seed-compressed shares, Shamir over ``2^127 − 1``;
* the prime-order edwards25519 group for ECDH-PSI;
* exact discrete Laplace and Gaussian samplers;
* the VDAF draft's fields (Field64, Field128), NTT, XOFs and fully linear proof
  (validity circuits and gadgets) under Prio3 (``docs/prio3.md``).

Use these through :mod:`datafed.protocols` and the client where a safe API exists.
"""

from datafed.hazmat._additive import (
    AdditiveShare,
    SeedShare,
    VectorShare,
    add_shares,
    reconstruct_additive,
    split_additive,
)
from datafed.hazmat._djn import (
    FixedBaseTable,
    entry_overhead_bytes,
    exponent_bits,
    native_available,
    use_native,
    window_bits,
)
from datafed.hazmat._dp import (
    RandomSource,
    SystemRandomSource,
    bernoulli_exp,
    gaussian_sigma2,
    laplace_scale,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)
from datafed.hazmat._field import Field64, Field128, NttField
from datafed.hazmat._field_cols import (
    Cols,
    LazyRows,
    Mask,
    Words,
    decode_columns,
    decode_words,
    encode_columns,
    ints_of_words,
    stack,
    words_below,
)
from datafed.hazmat._field_np import add64, mul64, sub64
from datafed.hazmat._fixedpoint import (
    FRAC_BITS,
    RingArray,
    decode_fixed,
    decode_int,
    encode_fixed,
    encode_int,
)
from datafed.hazmat._flp import FlpBBCGGI19
from datafed.hazmat._flp_batch import decide_columns, query_columns, rows_of, sum_rows
from datafed.hazmat._flp_circuits import CountCircuit, SumCircuit, Valid
from datafed.hazmat._flp_gadgets import Gadget, Mul, ParallelSum, PolyEval
from datafed.hazmat._flp_vec_circuits import (
    HistogramCircuit,
    MultihotCountVecCircuit,
    SumVecCircuit,
    optimal_chunk_length,
)
from datafed.hazmat._group import hash_to_group, is_valid_point, random_scalar, scalar_mult
from datafed.hazmat._he import (
    EncryptedVector,
    HeContext,
    HeParams,
    HePublicContext,
    HeResult,
)
from datafed.hazmat._ntt import inv_ntt, ntt
from datafed.hazmat._packing import Packer
from datafed.hazmat._paillier import (
    DEFAULT_MODULUS_BITS,
    MIN_MODULUS_BITS,
    PaillierCiphertext,
    PaillierPublicKey,
)
from datafed.hazmat._paillier_batch import BatchEncryptor
from datafed.hazmat._paillier_interop import (
    ciphertext_from_phe,
    ciphertext_to_phe,
    private_key_from_jwk,
    private_key_from_phe,
    private_key_to_jwk,
    private_key_to_phe,
    public_key_from_jwk,
    public_key_from_phe,
    public_key_to_jwk,
    public_key_to_phe,
)
from datafed.hazmat._paillier_keygen import generate_paillier_keypair
from datafed.hazmat._paillier_private import PaillierPrivateKey
from datafed.hazmat._prg import SEED_BYTES, derive_seed, prg_bytes, prg_uint64
from datafed.hazmat._shamir import (
    PRIME,
    ShamirShare,
    shamir_reconstruct,
    shamir_reconstruct_bytes,
    shamir_split,
    shamir_split_bytes,
)
from datafed.hazmat._xof import (
    TurboShake,
    Xof,
    XofFixedKeyAes128,
    XofTurboShake128,
    format_dst,
    xof_many,
)
from datafed.hazmat.errors import (
    DecryptionError,
    HazmatError,
    InvalidCiphertext,
    InvalidPoint,
    InvalidShare,
    PackingOverflow,
)

# RUF022 is exempted: ruff sorts Field64 before Field128 (natural order) while
# tests/unit/hazmat/test_api.py checks plain string order; the list follows the test.
__all__ = [  # noqa: RUF022
    "DEFAULT_MODULUS_BITS",
    "FRAC_BITS",
    "MIN_MODULUS_BITS",
    "PRIME",
    "SEED_BYTES",
    "AdditiveShare",
    "BatchEncryptor",
    "Cols",
    "CountCircuit",
    "DecryptionError",
    "EncryptedVector",
    "Field128",
    "Field64",
    "FixedBaseTable",
    "FlpBBCGGI19",
    "Gadget",
    "HazmatError",
    "HeContext",
    "HeParams",
    "HePublicContext",
    "HeResult",
    "HistogramCircuit",
    "InvalidCiphertext",
    "InvalidPoint",
    "InvalidShare",
    "LazyRows",
    "Mask",
    "Mul",
    "MultihotCountVecCircuit",
    "NttField",
    "Packer",
    "PackingOverflow",
    "PaillierCiphertext",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "ParallelSum",
    "PolyEval",
    "RandomSource",
    "RingArray",
    "SeedShare",
    "ShamirShare",
    "SumCircuit",
    "SumVecCircuit",
    "SystemRandomSource",
    "TurboShake",
    "Valid",
    "VectorShare",
    "Words",
    "Xof",
    "XofFixedKeyAes128",
    "XofTurboShake128",
    "add64",
    "add_shares",
    "bernoulli_exp",
    "ciphertext_from_phe",
    "ciphertext_to_phe",
    "decide_columns",
    "decode_columns",
    "decode_fixed",
    "decode_int",
    "decode_words",
    "derive_seed",
    "encode_columns",
    "encode_fixed",
    "encode_int",
    "entry_overhead_bytes",
    "exponent_bits",
    "format_dst",
    "gaussian_sigma2",
    "generate_paillier_keypair",
    "hash_to_group",
    "ints_of_words",
    "inv_ntt",
    "is_valid_point",
    "laplace_scale",
    "mul64",
    "native_available",
    "ntt",
    "optimal_chunk_length",
    "prg_bytes",
    "prg_uint64",
    "private_key_from_jwk",
    "private_key_from_phe",
    "private_key_to_jwk",
    "private_key_to_phe",
    "public_key_from_jwk",
    "public_key_from_phe",
    "public_key_to_jwk",
    "public_key_to_phe",
    "query_columns",
    "random_scalar",
    "reconstruct_additive",
    "rows_of",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "scalar_mult",
    "shamir_reconstruct",
    "shamir_reconstruct_bytes",
    "shamir_split",
    "shamir_split_bytes",
    "split_additive",
    "stack",
    "sub64",
    "sum_rows",
    "use_native",
    "window_bits",
    "words_below",
    "xof_many",
]
