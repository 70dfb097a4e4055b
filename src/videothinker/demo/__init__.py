"""The main job: VideoThinker end to end in the causal lab (`videothinker demo`, docs/DEMO.md).

`run_demo(out, preset, seed)` runs one seed (pipeline.py, read top to bottom); presets.py holds the
settings of each size; report.py the report of one run; aggregate.py several seeds and their report.
"""

from videothinker.demo.aggregate import run_demo_seeds, run_seeds_in_processes, write_aggregate_report
from videothinker.demo.pipeline import DemoPaths, DemoResult, run_demo, set_cpu_threads
from videothinker.demo.presets import PRESETS, DemoPreset, apply_overrides, get_preset

__all__ = [
    "PRESETS",
    "DemoPaths",
    "DemoPreset",
    "DemoResult",
    "apply_overrides",
    "get_preset",
    "run_demo",
    "run_demo_seeds",
    "run_seeds_in_processes",
    "set_cpu_threads",
    "write_aggregate_report",
]
