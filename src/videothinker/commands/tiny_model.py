"""`videothinker tiny-model`: build a tiny random-init model of a real Qwen VL architecture."""

from __future__ import annotations

import argparse

HELP = "build a tiny random-init Qwen VL model (real architecture, for tests and demos)"
DESCRIPTION = """\
Build a tiny model of a real architecture (Qwen2-VL, Qwen2.5-VL or Qwen3-VL) with random weights:
a byte-level BPE tokenizer trained on the fly, the family's real processor, special tokens and chat
template, saved in Hugging Face format (safetensors). It loads like a real checkpoint but knows
nothing: use it for tests, the demo and benchmarks, or train it on synthetic data.

example:
  videothinker tiny-model --arch qwen2_5_vl --out models/tiny-qwen2_5_vl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from videothinker.models.tiny import ARCHS, TinySizes

    parser.add_argument(
        "--arch", choices=ARCHS, default="qwen2_5_vl", help="model family (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    parser.add_argument("--corpus", help="extra tokenizer training text, one sample per line")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    defaults = TinySizes()
    for name in TinySizes.__dataclass_fields__:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, name),
            help="default: %(default)s",
        )


def run(args: argparse.Namespace) -> int:
    from videothinker.console import print0
    from videothinker.models.tiny import TinySizes, build_tiny_model

    sizes = {name: getattr(args, name) for name in TinySizes.__dataclass_fields__}
    out = build_tiny_model(
        args.arch, args.out, corpus=args.corpus, seed=args.seed, overwrite=args.overwrite, **sizes
    )
    print0(f"tiny {args.arch} model written to {out}")
    return 0
