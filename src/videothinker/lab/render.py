"""Top-down rendering of lab scenes to RGB frames, drawn so that a tiny vision model can tell objects apart.

Each attribute has one visual cue that survives small frames and H.264 compression:

- colour: the fill colour, one of a few saturated colours far apart in RGB, on a dark table;
- shape: cube = filled square, sphere = filled disc, cylinder = disc with a dark ring inside (the
  coloured share of the bounding box is about 1.0, 0.79 and 0.57);
- material: metal = a white specular highlight and a light rim; rubber = matte, no highlight.

A collision can also leave a *contact mark* (`contact_marks`): from the first frame at or after the
contact on, each of the two objects carries a dot of the other's colour on its rim where they touched,
as if paint rubbed off. Marks stay to the end of the clip, so every collision of the clip is visible in
its last frame, which frame sampling always keeps, however few frames it takes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from videothinker.lab.scene import ObjectSpec

PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 245),
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 230),
    "purple": (170, 60, 225),
}
BACKGROUND = (45, 45, 50)
HIGHLIGHT = (255, 255, 255)
RIM = (215, 215, 215)
# Geometry of the sprites, as fractions of the radius.
CUBE_HALF_SIDE = 0.88
RING = (0.4, 0.76)  # inner and outer radius of the cylinder's dark ring
HIGHLIGHT_RADIUS = 0.24
HIGHLIGHT_OFFSET = 0.3
# A contact mark: a dot of the partner's colour, of radius `mark_radius` (a fraction of the object's,
# `videothinker.lab.LabConfig.mark_radius`), on the line toward the contact point, its far edge at
# MARK_EDGE of the radius (inside the body, so the object's outline stays its own).
MARK_EDGE = 0.9
LEGACY_MARK_RADIUS = 0.3  # the first marks (sets whose lab.json has no mark_radius)


@dataclass(frozen=True)
class View:
    """Maps world coordinates (y up, the square [-half_extent, half_extent]^2) to pixels (y down)."""

    width: int
    height: int
    half_extent: float

    @property
    def scale(self) -> float:
        """Pixels per world unit."""
        return min(self.width, self.height) / (2.0 * self.half_extent)

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """[..., 2] world coordinates -> [..., 2] pixel coordinates (column, row), continuous."""
        xy = np.asarray(xy, dtype=np.float64)
        col = self.width / 2.0 + xy[..., 0] * self.scale
        row = self.height / 2.0 - xy[..., 1] * self.scale
        return np.stack([col, row], axis=-1)


def _draw(frame: np.ndarray, spec: ObjectSpec, center: np.ndarray, radius_px: float) -> None:
    """Draw one object into ``frame`` [H, W, 3] uint8 at pixel ``center`` (column, row)."""
    height, width = frame.shape[:2]
    reach = int(np.ceil(radius_px)) + 2
    c0, r0 = int(np.floor(center[0])) - reach, int(np.floor(center[1])) - reach
    c1, r1 = c0 + 2 * reach + 1, r0 + 2 * reach + 1
    cc0, rr0, cc1, rr1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
    if cc0 >= cc1 or rr0 >= rr1:
        return  # outside the view
    cols = np.arange(cc0, cc1) + 0.5 - center[0]
    rows = np.arange(rr0, rr1) + 0.5 - center[1]
    dx, dy = np.meshgrid(cols / radius_px, rows / radius_px)
    dist = np.hypot(dx, dy)
    if spec.shape == "cube":
        body = np.maximum(np.abs(dx), np.abs(dy)) <= CUBE_HALF_SIDE
        outline = np.maximum(np.abs(dx), np.abs(dy)) <= CUBE_HALF_SIDE + 1.0 / radius_px
    else:
        body = dist <= 1.0
        outline = dist <= 1.0 + 1.0 / radius_px
    patch = frame[rr0:rr1, cc0:cc1]
    if spec.material == "metal":
        patch[outline & ~body] = RIM
    patch[body] = PALETTE[spec.color]
    if spec.shape == "cylinder":
        patch[(dist >= RING[0]) & (dist <= RING[1])] = BACKGROUND
    if spec.material == "metal":
        spot = np.hypot(dx + HIGHLIGHT_OFFSET, dy + HIGHLIGHT_OFFSET) <= HIGHLIGHT_RADIUS
        patch[spot & body] = HIGHLIGHT


@dataclass(frozen=True)
class ContactMark:
    """A dot of ``color`` on object ``object_id``'s rim, toward ``direction`` (a world unit vector),
    drawn from frame ``first_frame`` on."""

    object_id: int
    first_frame: int
    direction: tuple[float, float]
    color: str


def contact_marks(objects: list[ObjectSpec], collisions: Iterable, fps: float) -> list[ContactMark]:
    """The marks that ``collisions`` (`videothinker.lab.physics.Collision`) leave: one on each object,
    in the other's colour, from the first frame at or after the contact."""
    colors = {o.object_id: o.color for o in objects}
    marks = []
    for c in collisions:
        a, b = c.object_ids
        first = math.ceil(c.time * fps - 1e-9)
        nx, ny = c.normal
        marks.append(ContactMark(a, first, (nx, ny), colors[b]))
        marks.append(ContactMark(b, first, (-nx, -ny), colors[a]))
    return marks


def _draw_mark(
    frame: np.ndarray, center: np.ndarray, radius_px: float, mark: ContactMark, mark_radius: float
) -> None:
    """Draw ``mark`` on the object at pixel ``center`` (column, row); world y is up, rows go down."""
    offset = MARK_EDGE - mark_radius
    spot = center + offset * radius_px * np.array([mark.direction[0], -mark.direction[1]])
    r = mark_radius * radius_px
    c0, r0 = max(int(np.floor(spot[0] - r)), 0), max(int(np.floor(spot[1] - r)), 0)
    c1, r1 = (
        min(int(np.ceil(spot[0] + r)) + 1, frame.shape[1]),
        min(int(np.ceil(spot[1] + r)) + 1, frame.shape[0]),
    )
    if c0 >= c1 or r0 >= r1:
        return
    dx, dy = np.meshgrid(np.arange(c0, c1) + 0.5 - spot[0], np.arange(r0, r1) + 0.5 - spot[1])
    frame[r0:r1, c0:c1][np.hypot(dx, dy) <= r] = PALETTE[mark.color]


def render_frames(
    objects: list[ObjectSpec],
    positions: np.ndarray,
    view: View,
    radius: float,
    marks: list[ContactMark] = (),
    mark_radius: float = LEGACY_MARK_RADIUS,
) -> np.ndarray:
    """Render a clip: ``positions`` [F, N, 2] world centres -> uint8 frames [F, H, W, 3], with the
    contact ``marks`` (`contact_marks`) drawn over the objects from their first frame on, each a dot of
    ``mark_radius`` times the object's radius.

    Objects are drawn in id order; they never overlap (they only touch), so the order does not matter.
    """
    positions = np.asarray(positions)
    frames = np.empty((positions.shape[0], view.height, view.width, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    pixels = view.to_pixels(positions)
    radius_px = radius * view.scale
    for f in range(positions.shape[0]):
        for spec in objects:
            _draw(frames[f], spec, pixels[f, spec.object_id], radius_px)
        for mark in marks:
            if mark.first_frame <= f:
                _draw_mark(frames[f], pixels[f, mark.object_id], radius_px, mark, mark_radius)
    return frames
