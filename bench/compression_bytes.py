"""Uplink bytes of one update, by method, codec and block size, against FedIT's float32 update.

No training: the default model's shared tensors of each method (PFTT: its adapters; FedIT: its
LoRA A and B) are filled with a random update and put into a reply the way a client sends it
(`pfl_app.compression.encode_into`, float32 without a codec), and Flower counts the record bytes
(`count_bytes`, what `bytes_up` counts in a run, less the few hundred bytes of metrics). The issue's
goals: PFTT at int8 at most 0.08x FedIT at float32, PFTT at int4 at most 0.04x.

    python bench/compression_bytes.py                                  # block sizes 32 64 128 256 512
    python bench/compression_bytes.py --block-sizes 64 --json /tmp/bytes.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flwr.app import RecordDict  # noqa: E402

from pfl_app.compression import encode_into  # noqa: E402
from pfl_app.compression.codec import CODECS  # noqa: E402
from pfl_app.config import parse_run_config  # noqa: E402
from pfl_app.launch import load_scenario, resolve_run_config  # noqa: E402
from pfl_app.methods import method_spec  # noqa: E402
from pfl_app.models.personalized import shared_model_bundle  # noqa: E402


def update_bytes(tensors: dict[str, np.ndarray], codec: str, block_size: int) -> int:
    """The bytes of the records an update of ``tensors`` travels as under ``codec``."""
    rng = np.random.default_rng(0)
    update = {k: (rng.standard_normal(v.shape) * 1e-3).astype(np.float32) for k, v in tensors.items()}
    content = RecordDict()
    encode_into(content, update, codec, block_size)
    return sum(record.count_bytes() for record in content.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--methods", nargs="+", default=["pftt", "fedit"])
    p.add_argument("--block-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()

    cfg = parse_run_config(resolve_run_config(load_scenario(args.scenario), {}, ROOT))
    bundle = shared_model_bundle(cfg)
    shared = {m: bundle.initial_tensors(method_spec(m).strategy.shared_groups) for m in args.methods}
    reference = update_bytes(shared["fedit"], "none", 64) if "fedit" in shared else None
    rows = []
    for method, tensors in shared.items():
        elements = sum(v.size for v in tensors.values())
        for codec in CODECS:
            for block in (args.block_sizes if codec in ("int8", "int4") else [args.block_sizes[0]]):
                nbytes = update_bytes(tensors, codec, block)
                rows.append({"method": method, "codec": codec, "block_size": block if codec in ("int8", "int4")
                             else None, "tensors": len(tensors), "elements": elements, "bytes": nbytes,
                             "bits_per_element": 8 * nbytes / elements,
                             "vs_fedit_fp32": nbytes / reference if reference else None})

    print(f"| method | codec | block | elements | bytes | bits/element | x FedIT fp32 |  ({cfg.model.name})")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['codec']} | {r['block_size'] or '-'} | {r['elements']:,} | {r['bytes']:,} | "
              f"{r['bits_per_element']:.3f} | {r['vs_fedit_fp32']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
