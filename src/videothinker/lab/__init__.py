"""The causal lab: a synthetic world in CLEVRER's format whose counterfactuals need reasoning.

Objects slide on parallel tracks and hit each other in chains; questions ask what happens if one
object is removed. See docs/LAB.md for the world, its rules and the files it writes.
"""

from videothinker.lab.generate import (
    LabConfig,
    LabSummary,
    generate_lab,
    load_lab_config,
    split_by_scene,
    write_split,
)
from videothinker.lab.scene import WorldConfig

__all__ = [
    "LabConfig",
    "LabSummary",
    "WorldConfig",
    "generate_lab",
    "load_lab_config",
    "split_by_scene",
    "write_split",
]
