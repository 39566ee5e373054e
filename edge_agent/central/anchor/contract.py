"""The anchoring contract: its Vyper source, the compiled artefact shipped beside it, and how to rebuild that.

The runtime reads only `RecordAnchor.json` (ABI and bytecode), so no compiler is needed to anchor.
`python -m edge_agent.central.anchor.contract` recompiles the source with the pinned `vyper` (the
test extra) and rewrites the artefact; tests/central/test_anchor_contract.py checks they match.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import cache
from importlib import resources
from typing import Any

CONTRACT_NAME = "RecordAnchor"
VYPER_VERSION = "0.4.3"  # also the source's `# pragma version`; bytecode differs between compiler releases


def source_text() -> str:
    return (resources.files(__package__) / "contracts" / f"{CONTRACT_NAME}.vy").read_text(encoding="utf-8")


@cache
def artifact() -> dict[str, Any]:
    """{'contract', 'vyper', 'source_sha256', 'abi', 'bytecode', 'bytecode_runtime'} as shipped."""
    data: dict[str, Any] = json.loads(
        (resources.files(__package__) / "contracts" / f"{CONTRACT_NAME}.json").read_text(encoding="utf-8")
    )
    return data


def compile_artifact() -> dict[str, Any]:
    """Compile the shipped source with the installed vyper; ImportError/RuntimeError if it cannot."""
    import vyper

    if vyper.__version__ != VYPER_VERSION:
        raise RuntimeError(f"the artefact is built with vyper {VYPER_VERSION}, found vyper {vyper.__version__}")
    src = source_text()
    out = vyper.compile_code(src, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {
        "contract": CONTRACT_NAME,
        "vyper": VYPER_VERSION,
        "source_sha256": hashlib.sha256(src.encode("utf-8")).hexdigest(),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


def main() -> int:
    from pathlib import Path

    target = Path(__file__).with_name("contracts") / f"{CONTRACT_NAME}.json"
    target.write_text(json.dumps(compile_artifact(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
