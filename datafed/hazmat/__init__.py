"""Raw cryptographic primitives ("hazardous materials"): no policy, no I/O.

* Paillier (phe-compatible, DJN fixed-base randomness, CRT decryption) and packing;
* CKKS / BFV vectors on TenSEAL (imported lazily, on first use);
* additive sharing over ``Z_2^64`` with seed-compressed shares, Shamir over ``2^127 − 1``;
* the prime-order edwards25519 group for ECDH-PSI;
* exact discrete Laplace and Gaussian samplers.

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
from datafed.hazmat._djn import FixedBaseTable
from datafed.hazmat._dp import (
    RandomSource,
    SystemRandomSource,
    bernoulli_exp,
    gaussian_sigma2,
    laplace_scale,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)
from datafed.hazmat._fixedpoint import (
    FRAC_BITS,
    RingArray,
    decode_fixed,
    decode_int,
    encode_fixed,
    encode_int,
)
from datafed.hazmat._group import hash_to_group, is_valid_point, random_scalar, scalar_mult
from datafed.hazmat._he import (
    EncryptedVector,
    HeContext,
    HeParams,
    HePublicContext,
    HeResult,
)
from datafed.hazmat._packing import Packer
from datafed.hazmat._paillier import (
    DEFAULT_MODULUS_BITS,
    MIN_MODULUS_BITS,
    PaillierCiphertext,
    PaillierPublicKey,
    generate_paillier_keypair,
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
from datafed.hazmat.errors import (
    DecryptionError,
    HazmatError,
    InvalidCiphertext,
    InvalidPoint,
    InvalidShare,
    PackingOverflow,
)

__all__ = [
    "DEFAULT_MODULUS_BITS",
    "FRAC_BITS",
    "MIN_MODULUS_BITS",
    "PRIME",
    "SEED_BYTES",
    "AdditiveShare",
    "BatchEncryptor",
    "DecryptionError",
    "EncryptedVector",
    "FixedBaseTable",
    "HazmatError",
    "HeContext",
    "HeParams",
    "HePublicContext",
    "HeResult",
    "InvalidCiphertext",
    "InvalidPoint",
    "InvalidShare",
    "Packer",
    "PackingOverflow",
    "PaillierCiphertext",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "RandomSource",
    "RingArray",
    "SeedShare",
    "ShamirShare",
    "SystemRandomSource",
    "VectorShare",
    "add_shares",
    "bernoulli_exp",
    "ciphertext_from_phe",
    "ciphertext_to_phe",
    "decode_fixed",
    "decode_int",
    "derive_seed",
    "encode_fixed",
    "encode_int",
    "gaussian_sigma2",
    "generate_paillier_keypair",
    "hash_to_group",
    "is_valid_point",
    "laplace_scale",
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
    "random_scalar",
    "reconstruct_additive",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "scalar_mult",
    "shamir_reconstruct",
    "shamir_reconstruct_bytes",
    "shamir_split",
    "shamir_split_bytes",
    "split_additive",
]
