"""The run's log: ``OUTPUT/log.jsonl``, one JSON object per line (the start event with the resolved config,
then one row per logged step, and events such as a collapse), mirrored to TensorBoard and to Weights &
Biases when ``grpo.report_to`` asks for them. W&B runs by its own environment variables
(``WANDB_MODE=offline`` writes under OUTPUT/wandb with no network, ``WANDB_PROJECT``, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videothinker.console import warn


class JsonlLogger:
    """Appends one JSON object per line to ``log.jsonl`` and mirrors each step's scalars to
    TensorBoard and W&B if asked (``wandb=True``: a W&B run named after the output folder, with the
    resolved ``config``)."""

    def __init__(
        self,
        path: Path,
        tensorboard_dir: Path | None = None,
        enabled: bool = True,
        wandb: bool = False,
        config: Any = None,
    ):
        self.path, self.enabled, self.tb, self.wandb = path, enabled, None, None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                warn("report_to includes tensorboard but tensorboard is not installed; logging JSONL only")
        if enabled and wandb:
            self.wandb = _start_wandb(path.parent, config)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if "step" not in row or "event" in row:
            return
        scalars = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, row["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        """Flush and close the mirrors (the JSONL file is closed after every row)."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def truncate_after(self, step: int) -> None:
        """Drop rows of steps after ``step`` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", -1) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))


def _start_wandb(out: Path, config: Any):
    """A W&B run for the output folder ``out`` (resumed by id if the run resumes), or None with a warning
    when wandb is not installed."""
    try:
        import wandb
    except ImportError:
        warn("report_to includes wandb but wandb is not installed (pip install wandb); logging JSONL only")
        return None
    import hashlib

    from videothinker.yaml_config import to_dict

    run_id = "".join(ch if ch.isalnum() else "-" for ch in out.resolve().name)[-64:] or "run"
    return wandb.init(
        dir=str(out),
        name=out.name,
        id=f"{run_id}-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]}",
        resume="allow",
        config=to_dict(config) if config is not None else None,
    )
