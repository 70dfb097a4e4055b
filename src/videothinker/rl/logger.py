"""The run's log: ``OUTPUT/log.jsonl``, one JSON object per line (the start event with the resolved config,
then one row per logged step), mirrored to TensorBoard when ``grpo.report_to`` asks for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videothinker.console import warn


class JsonlLogger:
    """Appends one JSON object per line to ``log.jsonl`` (and mirrors scalars to TensorBoard if asked)."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None, enabled: bool = True):
        self.path, self.enabled, self.tb = path, enabled, None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                warn("report_to includes tensorboard but tensorboard is not installed; logging JSONL only")

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None and "step" in row:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "step":
                    self.tb.add_scalar(key, value, row["step"])

    def truncate_after(self, step: int) -> None:
        """Drop rows of steps after ``step`` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", -1) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))
