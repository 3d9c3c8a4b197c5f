"""Generate the Python wire contract from ``protos/`` into ``datafed/proto/v1``.

Usage::

    python protos/generate.py           # regenerate in place
    python protos/generate.py --check   # fail if the committed code is not current

The generated modules are committed and never edited by hand; ``--check``
regenerates into a temporary directory and compares byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("datafed") / "proto" / "v1"


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every ``.proto`` file; return the generated files."""
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    # The mypy plugins live next to this interpreter; name them so PATH does not matter.
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    out_dir = out_root / PACKAGE_DIR
    return sorted(p for p in out_dir.iterdir() if p.name.endswith((".py", ".pyi")))


def main() -> int:
    """Regenerate, or with ``--check`` compare against the committed code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        target = ROOT / PACKAGE_DIR
        if ns.check:
            stale = [
                g.name
                for g in generated
                if not (target / g.name).exists() or not filecmp.cmp(g, target / g.name, False)
            ]
            committed = {p.name for p in target.glob("*_pb2*.py*")}
            extra = sorted(committed - {g.name for g in generated})
            if stale or extra:
                print(f"generated code is stale: {stale + extra}; run python protos/generate.py")
                return 1
            print(f"generated code is current ({len(generated)} files)")
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for g in generated:
            (target / g.name).write_bytes(g.read_bytes())
        print(f"wrote {len(generated)} files to {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
