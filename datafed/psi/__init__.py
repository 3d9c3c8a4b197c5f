"""Private intersection-sum across two agency nodes, relayed by the analyst.

The protocol is the DDH-based Private Join and Compute of Ion et al. ("On Deploying
Secure Computing: Private Intersection-Sum-with-Cardinality", EuroS&P 2020) over the
prime-order group of edwards25519 (:mod:`datafed.hazmat`), rearranged for docs/invisibility.md's
star topology: the two nodes never connect to each other; the analyst's client carries
every message, and the values are encrypted under the **analyst's** Paillier key.

Parties: the *ids* node holds identifiers ``V`` (e.g. the tax bureau's taxpayers), the
*values* node holds pairs ``(w, t)`` (e.g. a bank's loans), the analyst holds the Paillier
key pair ``A``.  ``H`` hashes to the group; ``k1``, ``k2`` are fresh secret scalars per job.

1. ``Blind`` (analyst → ids): the ids node returns ``{H(v)^k1}`` shuffled, and a signed
   statement (job digest, count, payload digest, a fresh X25519 key for this job).
2. ``Exchange`` (analyst → values, relaying 1): the values node checks the ids node's
   statement (CA-issued node certificate, signature, digests), then returns a box sealed
   to the ids node's job key holding ``{H(v)^(k1·k2)}`` shuffled and the shuffled pairs
   ``(H(w)^k2, Enc_A(t))``, and a signed statement pinning the box.
3. ``Intersect`` (analyst → ids, relaying 2): the ids node checks the statement, opens the
   box, raises each ``H(w)^k2`` to ``k1``, adds the ciphertexts whose point lies in
   ``{H(v)^(k1·k2)}``, re-randomizes the sum and returns ``Enc_A(S)`` and ``|J|``.

The analyst decrypts ``S``.  Who learns what (semi-honest nodes, no collusion between the
analyst and a node):

* **analyst**: ``|J|`` and ``S``, plus the set sizes ``|V|`` and ``|W|`` (the statements
  state them, the payload lengths show them).  It
  sees the blinded points ``H(v)^k1``, which it cannot invert or test guesses against
  without ``k1``, and a sealed box it cannot open, so it never holds ``Enc_A(t)`` for a
  single value although it owns the key.  Statements signed by the nodes stop it from
  forging or swapping what it relays (for instance its own points in place of the ids
  node's, or fake pairs that would turn the sum into a membership oracle).
* **ids node**: ``|J|`` and the number of pairs ``|W|``; the values arrive encrypted under a
  key it does not hold, and which ids matched stays hidden behind ``k2`` and the shuffles.
* **values node**: ``|V|`` only; it sees the ids node's blinded points, never ``|J|`` or ``S``.

Each node enforces its own policy (operation, requester, purpose, columns) and writes
``approved``/``denied`` and ``released`` (with a result digest) to its ledger; the larger
of the two nodes' minimum group sizes bounds ``|J|`` before any sum is released.  Not
covered: a malicious node (it could lie about its own data, as in any such protocol) or
an analyst colluding with the ids node (the two together could open the box's values).
Under differential privacy the ids node adds the noise; :mod:`datafed.psi._dp` says who
adds what and what DP does and does not cover.
"""

from datafed.psi._dp import DpNoise, clamp_pairs, fixed_bound
from datafed.psi._encode import encode_identifier, identifier_set, value_pairs
from datafed.psi._job import (
    IdsColumn,
    IntersectionSumResult,
    PsiJob,
    ValuesColumns,
    parse_ids,
    parse_values,
)
from datafed.psi._parties import VALUE_BOUND, IdsParty, exchange
from datafed.psi._statement import Statement, StatementBody, sign_statement, verify_statement
from datafed.psi._workers import Pool
from datafed.psi.errors import InvalidPsiMessage, PsiError

__all__ = [
    "VALUE_BOUND",
    "DpNoise",
    "IdsColumn",
    "IdsParty",
    "IntersectionSumResult",
    "InvalidPsiMessage",
    "Pool",
    "PsiError",
    "PsiJob",
    "Statement",
    "StatementBody",
    "ValuesColumns",
    "clamp_pairs",
    "encode_identifier",
    "exchange",
    "fixed_bound",
    "identifier_set",
    "parse_ids",
    "parse_values",
    "sign_statement",
    "value_pairs",
    "verify_statement",
]
