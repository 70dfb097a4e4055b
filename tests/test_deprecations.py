"""The project's own calls into transformers raise no deprecation warning on the installed version.

A guard records every FutureWarning / DeprecationWarning and every "deprecated" message of the
transformers logger while a tiny run goes through the project's transformers call sites: model and
processor loading, activation checkpointing, sampling, reference and policy log-probs, a LoRA
adapter, checkpoints, evaluation's generation. Each one is attributed to the first frame outside
transformers and torch: a frame of src/videothinker is a call of ours; one of peft or accelerate is
theirs (not counted). transformers' deprecations move: this test fails when a new release deprecates
a call of ours, and the fix must keep working on the oldest version pyproject.toml allows (5.17).
"""

from __future__ import annotations

import json
import logging
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import videothinker

pytestmark = pytest.mark.slow

SRC = Path(videothinker.__file__).parent
_PASSED_THROUGH = (
    "/transformers/",
    "/torch/",
    "/warnings.py",
    "/logging/",
    "/functools.py",
    "/contextlib.py",
)
# The sampling paths, checked with both engines (the decode engine and plain generate).
SAMPLING = ("rl/rollout.py", "eval/generation.py", "models/engine.py")


def _caller(stack: list[traceback.FrameSummary]) -> str:
    """``path:line`` of the first frame, from the innermost out, that is not transformers, torch or
    the warning machinery: who made the deprecated call."""
    for frame in reversed(stack):
        if not any(part in frame.filename for part in _PASSED_THROUGH):
            return f"{frame.filename}:{frame.lineno}"
    return "?"


@contextmanager
def deprecations():
    """Yield a dict ``caller -> message`` of the deprecation warnings and log messages met inside."""
    found: dict[str, str] = {}

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning | DeprecationWarning):
            found.setdefault(_caller(traceback.extract_stack()[:-1]), f"{category.__name__}: {message}")

    class Handler(logging.Handler):
        def emit(self, record):
            if "deprecat" in record.getMessage().lower():
                found.setdefault(_caller(traceback.extract_stack()[:-1]), f"log: {record.getMessage()}")

    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers")
    handler = Handler(level=logging.WARNING)
    cache_clear = getattr(logging.Logger.warning_once, "cache_clear", None)
    if cache_clear is not None:  # a message logged "once" earlier in the session is logged again here
        cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = showwarning
        logger.addHandler(handler)
        try:
            yield found
        finally:
            logger.removeHandler(handler)


def ours(found: dict[str, str], where: tuple[str, ...] | None = None) -> dict[str, str]:
    """The deprecations of calls in src/videothinker (only in ``where``'s files, if given)."""
    inside = {c: m for c, m in found.items() if c.startswith(str(SRC))}
    if where is None:
        return inside
    return {c: m for c, m in inside.items() if any(c.startswith(str(SRC / w) + ":") for w in where)}


@pytest.fixture(scope="module")
def tiny_run(tiny_qwen2_5_vl_dir, tmp_path_factory) -> dict[str, str]:
    """A bias stage (LoRA, the decode engine), then GRPO against the initial model with activation
    checkpointing (plain generate), one step each, then greedy evaluation with both engines: the
    deprecations met, by caller."""
    from videothinker.config import load_train_config
    from videothinker.data.video import write_video
    from videothinker.eval.generation import ModelGenerator
    from videothinker.rl.trainer import Trainer

    root = tmp_path_factory.mktemp("deprecations")
    write_video(root / "v.mp4", np.random.default_rng(0).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8), 4)
    records = [
        {"problem": f"Which will happen {i}?", "options": ["A. x", "B. y"], "solution": "A", "video": "v.mp4"}
        for i in range(2)
    ]
    (root / "train.json").write_text(json.dumps(records))
    common = [
        f"model.path={tiny_qwen2_5_vl_dir}",
        f"data.path={root / 'train.json'}",
        "grpo.max_steps=1",
        "grpo.num_generations=2",
        "grpo.max_completion_length=4",
        "grpo.per_device_train_batch_size=1",
    ]
    with deprecations() as found:
        lora = ["stage=bias", f"output_dir={root / 'bias'}", "model.lora_r=4"]
        Trainer(load_train_config("tiny_cpu", [*common, *lora]), resume=None).train()
        grpo = [
            "stage=grpo",
            "grpo.beta=0.04",
            f"output_dir={root / 'grpo'}",
            "model.gradient_checkpointing=true",
            "rollout.engine=generate",
        ]
        final = Trainer(load_train_config("tiny_cpu", [*common, *grpo]), resume=None).train()
        from videothinker.config import RolloutConfig, VideoConfig
        from videothinker.data.video import load_visual

        for engine in ("graph", "generate"):
            generator = ModelGenerator(
                str(final),
                dtype="float32",
                device="cpu",
                max_new_tokens=3,
                rollout=RolloutConfig(engine=engine),
            )
            generator(
                ["Which?"], [load_visual(str(root / "v.mp4"), "video", VideoConfig(), generator.size_factor)]
            )
    return found


def test_our_calls_raise_no_deprecation_warning(tiny_run):
    assert not ours(tiny_run), tiny_run


def test_sampling_paths_call_nothing_deprecated(tiny_run):
    """The same, for the sampling code alone (rollout, engine, eval generation): named so a failure
    points there."""
    assert not ours(tiny_run, SAMPLING)
