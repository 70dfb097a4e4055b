"""`videothinker eval`: evaluate a model on benchmark files, resumably, into predictions + metrics."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from videothinker.config import RolloutConfig, VideoConfig

HELP = "evaluate a model on benchmark files (batched greedy generation, resumable)"
DESCRIPTION = """\
Evaluate a model on benchmark files of the Video-R1 JSON family with the reference evaluation prompt
and greedy decoding. Predictions are appended to OUT/predictions.jsonl as they come (one line per
record), so an interrupted run resumes where it stopped and a finished one redoes nothing;
OUT/metrics.json holds accuracy overall, per benchmark, per task and per question kind, and the
counts of records scored, skipped and failed. `videothinker score` recomputes it without the model.

The benchmark name is the file stem without a leading "eval_" (eval_mvbench.json -> mvbench).
Missing videos stop the run before the model loads, unless --skip-missing. Rules: docs/EVALUATION.md.

example:
  videothinker eval --model models/cdpo --benchmark data/eval_mvbench.json data/eval_mmvu.json \\
      --video-root data/videos --out runs/eval-cdpo --batch-size 8
"""


@dataclasses.dataclass
class EvalConfig:
    """The config sections `videothinker eval` reads from --config / --set (``video.fps=1``,
    ``rollout.engine=generate``)."""

    video: VideoConfig = dataclasses.field(default_factory=VideoConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)

    def validate(self) -> None:
        problems = self.rollout.problems()
        if problems:
            raise ValueError("invalid eval config:\n  - " + "\n  - ".join(problems))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from videothinker.models.loading import DTYPES

    parser.add_argument("--model", required=True, help="local checkpoint folder")
    parser.add_argument(
        "--benchmark", nargs="+", required=True, metavar="FILE", help="benchmark .json/.jsonl files"
    )
    parser.add_argument(
        "--video-root", help="folder the records' media paths are relative to (default: each file's folder)"
    )
    parser.add_argument("--out", required=True, help="run folder: predictions.jsonl, metrics.json, run.json")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="records per generate call (default: %(default)s)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=1024, help="completion length limit (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N records of each benchmark")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="model dtype (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument(
        "--attn-implementation", default="sdpa", help="attention kernel (default: %(default)s)"
    )
    parser.add_argument(
        "--config",
        help="YAML file with a 'video' section (frame sampling) and/or a 'rollout' section (engine)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set video.max_frames=32, or --set rollout.engine=generate to decode "
        "with plain transformers generate instead of the decode engine (same greedy tokens)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="score the records whose video exists and list the others as skipped (default: stop with an error)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="evaluate again records whose video failed to decode"
    )


def run(args: argparse.Namespace) -> int:
    from videothinker.config import load_config
    from videothinker.eval.benchmarks import load_benchmarks
    from videothinker.eval.generation import ModelGenerator
    from videothinker.eval.metrics import print_summary
    from videothinker.eval.runner import EvalSettings, evaluate

    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"model folder not found: {args.model}")
    for name in ("batch_size", "max_new_tokens", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    config = load_config(EvalConfig, args.config, args.set)
    settings = EvalSettings(
        model=args.model,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        skip_missing=args.skip_missing,
        retry_failed=args.retry_failed,
        video=config.video,
    )
    benchmarks = load_benchmarks(args.benchmark, args.video_root)

    def make_generator() -> ModelGenerator:
        return ModelGenerator(
            args.model,
            dtype=args.dtype,
            device=args.device,
            max_new_tokens=args.max_new_tokens,
            attn_implementation=args.attn_implementation,
            rollout=config.rollout,
        )

    metrics = evaluate(benchmarks, args.out, settings, make_generator)
    print_summary(metrics)
    return 0
