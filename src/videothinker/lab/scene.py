"""Scenes of the causal lab: which objects there are and how they start moving.

A scene is a few objects (4 or 5 by default) on a square table seen from above. Objects sit on
parallel *tracks* (lanes far enough apart that objects on different tracks never touch), so each track
is a one-dimensional world of its own:

- the *main* track holds 3 objects (4 where the track is long enough for them); usually a *striker* at
  one end moves toward the others and starts a chain of collisions (A hits B, B hits C, ...),
  sometimes both ends move inward (a pincer), sometimes nothing moves;
- the other objects sit on the side tracks: at rest, sliding alone, or in a short chain.

Every object has a colour, a material and a shape, and no two objects share all three, so each one has
a unique description. By default every object of a scene also has its own colour, and the questions
name objects by colour alone ("the red object"): the one attribute a tiny vision model reads most
easily (docs/LAB.md gives the numbers behind these choices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

COLORS = ("red", "green", "blue", "yellow", "cyan", "purple")
MATERIALS = ("rubber", "metal")
SHAPES = ("cube", "sphere", "cylinder")


@dataclass(frozen=True)
class ObjectSpec:
    """The static properties of one object (the ``object_property`` entry of an annotation)."""

    object_id: int
    color: str
    material: str
    shape: str

    def to_json(self) -> dict:
        return {
            "object_id": self.object_id,
            "color": self.color,
            "material": self.material,
            "shape": self.shape,
        }


@dataclass(frozen=True)
class WorldConfig:
    """Geometry and motion ranges of the lab world (world units are arbitrary; the view is a square).

    The defaults are the recommended world (docs/LAB.md): at 112 x 112 pixels the table is 18.7 pixels
    per unit, so an object (radius 0.8) is 30 pixels across, a little more than one 28-pixel merged
    token of Qwen's vision tower; 4 or 5 objects on two lanes; every object its own colour.

    Attributes:
        half_extent: the table is [-half_extent, half_extent]^2; the camera sees all of it.
        radius: radius of every object.
        min_objects / max_objects: objects per scene (at least 4 leave 3 pairs once one is removed).
        speed_range: speed of a moving object at the start, units per second.
        lanes: offsets of the tracks across the table; further apart than a diameter plus the jitter.
        lane_jitter: random shift of each track's offset.
        min_gap: gap between the surfaces of neighbours on a track at the start (no contact at t = 0).
        colors: the palette scenes draw from.
        distinct_colors: every object of a scene has its own colour, and questions name objects by
            colour alone ("the red object"); False: any unique combination, minimal descriptions
            ("the rubber cube", "the red metal object").
    """

    half_extent: float = 3.0
    radius: float = 0.8
    min_objects: int = 4
    max_objects: int = 5
    speed_range: tuple[float, float] = (0.9, 1.8)
    lanes: tuple[float, ...] = (-1.5, 1.5)
    lane_jitter: float = 0.15
    min_gap: float = 0.3
    colors: tuple[str, ...] = COLORS
    distinct_colors: bool = True

    def __post_init__(self):
        if not 3 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError(
                f"objects per scene must satisfy 3 <= min <= max <= 6, got {self.min_objects}..{self.max_objects}"
            )
        unknown = set(self.colors) - set(COLORS)
        if unknown or not self.colors:
            raise ValueError(f"colors must be a non-empty subset of {COLORS}, got {self.colors}")
        if self.distinct_colors and self.max_objects > len(self.colors):
            raise ValueError(
                f"distinct colours need at least max_objects ({self.max_objects}) colours, got {len(self.colors)}"
            )
        spacing = min((abs(a - b) for a, b in combinations(self.lanes, 2)), default=math.inf)
        if not self.lanes or spacing <= 2 * (self.radius + self.lane_jitter):
            raise ValueError(
                f"lanes {self.lanes} must be more than a diameter plus twice the jitter apart "
                f"({2 * (self.radius + self.lane_jitter):.2f}), so that objects on different lanes never touch"
            )
        if self.track_capacity < 3:
            raise ValueError(
                f"a track holds {self.track_capacity} objects of radius {self.radius} on a table of half extent "
                f"{self.half_extent}; the main track needs 3"
            )
        if self.max_objects > self.track_capacity * len(self.lanes):
            raise ValueError(f"{self.max_objects} objects do not fit on {len(self.lanes)} lanes")

    @property
    def track_limit(self) -> float:
        """Largest distance of a centre from the middle of a track at the start (inside the view)."""
        return self.half_extent - self.radius - 0.05

    @property
    def track_capacity(self) -> int:
        """How many objects fit on one track at the start, min_gap apart."""
        return int(2 * self.track_limit // (2 * self.radius + self.min_gap)) + 1


@dataclass
class Scene:
    """One scene's objects and initial state.

    Attributes:
        index: the scene index (names the files: video_00042.mp4).
        objects: static properties, object_id == position in the list.
        positions: [N, 2] initial centres.
        velocities: [N, 2] initial velocities.
        axis: 0 when the tracks run along x, 1 along y.
        tracks: object ids per track, in order along the track.
    """

    index: int
    objects: list[ObjectSpec]
    positions: np.ndarray
    velocities: np.ndarray
    axis: int
    tracks: list[list[int]] = field(default_factory=list)


def _spaced_positions(
    rng: np.random.Generator, count: int, low: float, high: float, min_sep: float
) -> np.ndarray:
    """``count`` sorted values in [low, high] at least ``min_sep`` apart, uniformly spread."""
    slack = (high - low) - (count - 1) * min_sep
    if slack < 0:
        raise ValueError(f"{count} objects do not fit on a track of length {high - low}")
    return low + np.sort(rng.uniform(0.0, slack, size=count)) + min_sep * np.arange(count)


def _track_speeds(rng: np.random.Generator, count: int, mode: str, speed: float) -> np.ndarray:
    """Speeds along the track, in track order, for a motion mode."""
    speeds = np.zeros(count)
    if mode == "chain":  # a striker at one end moves toward the others
        if rng.random() < 0.5:
            speeds[0] = speed
        else:
            speeds[-1] = -speed
    elif mode == "pincer":  # both ends move inward
        speeds[0], speeds[-1] = speed, -speed * rng.uniform(0.7, 1.0)
    elif mode == "slide":  # a lone object slides one way
        speeds[0] = speed if rng.random() < 0.5 else -speed
    return speeds


def sample_scene(index: int, rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> Scene:
    """Draw one scene: object count, attributes, tracks and motion."""
    counts = np.arange(config.min_objects, config.max_objects + 1)
    # Three objects leave two after a removal, too few for three choices: make such scenes rare.
    weights = np.select([counts == 3, counts == 4], [0.3, 1.0], 1.3)
    n = int(rng.choice(counts, p=weights / weights.sum()))

    if config.distinct_colors:
        colors = rng.choice(len(config.colors), size=n, replace=False)
        looks = rng.integers(len(MATERIALS) * len(SHAPES), size=n)
        combos = [
            (config.colors[int(c)], MATERIALS[int(k) // len(SHAPES)], SHAPES[int(k) % len(SHAPES)])
            for c, k in zip(colors, looks)
        ]
    else:
        every = [(c, m, s) for c in config.colors for m in MATERIALS for s in SHAPES]
        combos = [every[int(k)] for k in rng.choice(len(every), size=n, replace=False)]
    objects = [ObjectSpec(i, *combo) for i, combo in enumerate(combos)]

    capacity = config.track_capacity
    main = min(n, int(rng.choice([3, 4], p=[0.7, 0.3])), capacity)
    sizes = [main]
    rest = n - main
    three_lanes = len(config.lanes) >= 3
    if rest == 3:
        sizes += [1, 2] if rng.random() < 0.5 and three_lanes else [3]
    elif rest:
        sizes += [1, 1] if rest > 1 and rng.random() >= 0.5 and three_lanes else [rest]
    lanes = rng.permutation(len(config.lanes))[: len(sizes)]

    axis = int(rng.integers(2))
    limit = config.track_limit
    min_sep = 2 * config.radius + config.min_gap
    positions = np.zeros((n, 2))
    velocities = np.zeros((n, 2))
    tracks: list[list[int]] = []
    order = rng.permutation(n)
    start = 0
    for track_no, (size, lane) in enumerate(zip(sizes, lanes)):
        ids = [int(i) for i in order[start : start + size]]
        start += size
        if track_no == 0:
            mode = str(rng.choice(["chain", "pincer", "still"], p=[0.7, 0.15, 0.15]))
        elif size == 1:
            mode = str(rng.choice(["slide", "still"]))
        else:
            mode = str(rng.choice(["chain", "still"], p=[0.25, 0.75]))
        along = _spaced_positions(rng, size, -limit, limit, min_sep)
        speeds = _track_speeds(rng, size, mode, rng.uniform(*config.speed_range))
        offset = config.lanes[lane] + rng.uniform(-config.lane_jitter, config.lane_jitter)
        for obj, a, v in zip(ids, along, speeds):
            positions[obj, axis], positions[obj, 1 - axis] = a, offset
            velocities[obj, axis] = v
        tracks.append(ids)
    return Scene(index, objects, positions, velocities, axis, tracks)
