"""Export core-attn's Triton hybrid attention as a Hugging Face Hub kernel repo.

    python scripts/export_hub_kernel.py OUT_DIR [--name core-hybrid-attention] [--version 1]

Writes, from the package's own source files (copied at export time, so the kernel repo is
never a second copy kept in git):

    OUT_DIR/
      README.md                                  kernel card
      build/torch-universal/
        metadata.json                            what `kernels` reads (name, id, version, backend)
        core_hybrid_attention/
          __init__.py                            re-exports the public functions
          triton_hybrid.py                       = core_attn/ops/triton_hybrid.py
          reference.py                           = core_attn/ops/reference.py

torch-universal is the variant for pure-Python (Triton) kernels: `kernels` accepts it on any
backend and torch version. Load it with ``kernels.get_local_kernel(Path(OUT_DIR))``, or after
uploading (``hf upload ORG/NAME OUT_DIR . --repo-type kernel``) with ``kernels.get_kernel("ORG/NAME")``.
The copied modules must import only torch, triton and the standard library (checked here).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "core_attn" / "ops"
SOURCES = ("triton_hybrid.py", "reference.py")  # copied verbatim into the kernel module
VARIANT = "torch-universal"
ALLOWED_IMPORTS = {"torch", "triton", "__future__"} | set(sys.stdlib_module_names)
_NAME = re.compile(r"^[a-z][-a-z0-9]*[a-z0-9]$")  # kernels' KernelName rule

INIT = '''"""{name}: hybrid (dense / streaming) attention for prefill, exported from core-attn {version}.

triton_hybrid_attention(query, key, value, dense_heads, *, sink_size, window_size, scale=None,
attention_mask=None): query [B, HQ, Tq, D], key/value [B, HKV, Tk, D], dense_heads bool [HQ],
attention_mask bool [B or 1, 1, Tq, Tk] (True = attend) -> [B, HQ, Tq, D]. A dense q_head
attends every causal key; a streaming q_head its first sink_size keys and a window of
window_size keys. hybrid_attention_reference is the plain masked-softmax ground truth.
"""

from .reference import hybrid_allowed_mask, hybrid_attention_reference
from .triton_hybrid import triton_hybrid_attention

__all__ = ["hybrid_allowed_mask", "hybrid_attention_reference", "triton_hybrid_attention"]
'''

CARD = """---
library_name: kernels
license: apache-2.0
tags:
- kernels
- triton
- attention
- core-attn
---

# {name}

Hybrid prefill attention of core-attn {version} as a Hub kernel:
selected q_heads keep full causal attention, all others attend to a few sink tokens and a
sliding window. One Triton launch covers all q_heads of a layer; GQA and boolean padding masks
are supported. Variant `torch-universal` (pure Python + Triton).

```python
import torch
from kernels import get_kernel

attn = get_kernel("ORG/{name}")
B, HQ, HKV, T, D = 1, 8, 2, 4096, 128
q = torch.randn(B, HQ, T, D, device="cuda", dtype=torch.bfloat16)
k = torch.randn(B, HKV, T, D, device="cuda", dtype=torch.bfloat16)
v = torch.randn_like(k)
dense = torch.zeros(HQ, dtype=torch.bool, device="cuda")
dense[:2] = True  # q_heads 0 and 1 dense, the others streaming
out = attn.triton_hybrid_attention(q, k, v, dense, sink_size=128, window_size=1024)  # [B, HQ, T, D]
```

Source files: `core_attn/ops/{sources}` (source sha256 prefix `{digest}`).
"""


def _check_imports(path: Path) -> None:
    """Raise if a copied module imports anything but torch, triton and the standard library."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            bad = "." * node.level + (node.module or "")
        elif isinstance(node, ast.ImportFrom):
            bad = node.module if node.module.split(".")[0] not in ALLOWED_IMPORTS else None
        elif isinstance(node, ast.Import):
            bad = next((a.name for a in node.names if a.name.split(".")[0] not in ALLOWED_IMPORTS), None)
        else:
            continue
        if bad:
            raise ValueError(
                f"{path} imports {bad!r}: a Hub kernel module may import only torch, triton and the standard library"
            )


def export_kernel(out_dir: str | Path, *, name: str = "core-hybrid-attention", version: int = 1) -> Path:
    """Write the kernel repo to ``out_dir`` (its build/ is replaced); return the variant folder."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    if not _NAME.match(name):
        raise ValueError(f"kernel name must match {_NAME.pattern} (lowercase, dashes), got {name!r}")
    missing = [s for s in SOURCES if not (OPS / s).is_file()]
    if missing:
        raise FileNotFoundError(f"kernel sources missing in {OPS}: {missing}")
    for source in SOURCES:
        _check_imports(OPS / source)
    try:
        lib_version = dist_version("core-attn")
    except PackageNotFoundError:
        lib_version = "unknown"
    out = Path(out_dir)
    module = name.replace("-", "_")
    variant = out / "build" / VARIANT
    if (out / "build").exists():
        shutil.rmtree(out / "build")
    (variant / module).mkdir(parents=True)
    digest = hashlib.sha256()
    for source in SOURCES:
        data = (OPS / source).read_bytes()
        digest.update(source.encode() + b"\0" + data)
        (variant / module / source).write_bytes(data)
    short = digest.hexdigest()[:10]
    (variant / module / "__init__.py").write_text(INIT.format(name=name, version=lib_version), encoding="utf-8")
    metadata = {
        "id": f"_{module}_{short}",  # unique per source content: the module name kernels imports it under
        "name": name,
        "version": version,
        "license": "Apache-2.0",
        "python-depends": [],
        "backend": {"type": "cuda"},
    }
    (variant / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    card = CARD.format(name=name, version=lib_version, sources=", ".join(SOURCES), digest=short)
    (out / "README.md").write_text(card, encoding="utf-8")
    return variant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="output folder (the kernel repo)")
    parser.add_argument("--name", default="core-hybrid-attention", help="kernel name (default: core-hybrid-attention)")
    parser.add_argument("--version", type=int, default=1, help="kernel major version (default: 1)")
    args = parser.parse_args(argv)
    variant = export_kernel(args.out_dir, name=args.name, version=args.version)
    print(f"wrote {variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
