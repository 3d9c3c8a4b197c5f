"""Protection modes (``docs/modes.md``): one class per mode, each with its node and client side."""

from datafed.modes._base import (
    ModeContext,
    ModeOptions,
    NodeEnv,
    OneShotMode,
    ProtectionMode,
    SteppedMode,
)
from datafed.modes._ckks import CkksMode, hold_context
from datafed.modes._ckks_contexts import CONTEXT_CACHE as CKKS_CONTEXT_CACHE
from datafed.modes._ckks_contexts import ContextNeeded
from datafed.modes._paillier import VALUE_BITS as PAILLIER_VALUE_BITS
from datafed.modes._paillier import PaillierMode, check_paillier_modulus
from datafed.modes._paillier_keys import KEY_CACHE as PAILLIER_KEY_CACHE
from datafed.modes._plain import PlainMode
from datafed.modes._secagg import SecAggMode
from datafed.modes._shares import SharesMode
from datafed.modes._steps import Combined, JobStash, NodeAnswer, StepSession

__all__ = [
    "CKKS_CONTEXT_CACHE",
    "MODES",
    "PAILLIER_KEY_CACHE",
    "PAILLIER_VALUE_BITS",
    "CkksMode",
    "Combined",
    "ContextNeeded",
    "JobStash",
    "ModeContext",
    "ModeOptions",
    "NodeAnswer",
    "NodeEnv",
    "OneShotMode",
    "PaillierMode",
    "PlainMode",
    "ProtectionMode",
    "SecAggMode",
    "SharesMode",
    "StepSession",
    "SteppedMode",
    "check_paillier_modulus",
    "describe_modes",
    "hold_context",
    "mode_class",
]

#: Every registered mode by wire name.
MODES: dict[str, type[ProtectionMode]] = {
    m.name: m for m in (PlainMode, PaillierMode, SharesMode, SecAggMode, CkksMode)
}


def describe_modes() -> str:
    """One line per registered mode (for ``--protection`` help and the docs)."""
    return "; ".join(f"{name}: {cls.summary}" for name, cls in MODES.items())


def mode_class(name: str) -> type[ProtectionMode]:
    """Return the mode called ``name`` or raise ValueError listing the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(
            f"unknown protection mode {name!r}: expected one of {sorted(MODES)}"
        ) from None
