"""Event-driven physics of the causal lab: equal discs sliding without friction, colliding elastically.

The world is deliberately simple so that its counterfactuals are learnable: every object is a disc of
the same radius and mass, moving in a straight line at constant speed until it touches another one.
Two equal masses in an elastic collision swap the components of their velocities along the line of
centres, so a moving object that hits a resting one head-on stops and the other moves on with its
velocity (a Newton's cradle). An object can only affect another by touching it, so removing an object
changes exactly the collisions downstream of it.

The simulation is event driven rather than time-stepped: the next contact time of every approaching
pair is solved in closed form, the state is advanced to the earliest one and that collision is
resolved. Collision times are exact, no overlap or tunnelling can happen, and a scene gives the same
result every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Contacts closer than this (in time, or as separation in units) are numerical noise, not new events.
_EPS = 1e-9
# A scene of a handful of discs has a few collisions; this many means a bug, not a busy scene.
_MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Collision:
    """One contact between two objects.

    Attributes:
        object_ids: the two objects' ids, sorted.
        time: seconds from the start of the clip.
        frame_id: the frame nearest to that time.
        location: [x, y] midpoint of the two centres at contact, in world units.
        normal: unit vector from the first object's centre toward the second's at contact (the
            renderer's contact marks sit on each object's rim in this direction, or against it).
    """

    object_ids: tuple[int, int]
    time: float
    frame_id: int
    location: tuple[float, float]
    normal: tuple[float, float] = (0.0, 0.0)


@dataclass
class Trajectory:
    """The motion of a set of objects over the frames of one clip.

    Attributes:
        object_ids: the id of each simulated object (the column order of the arrays).
        positions: [F, N, 2] centres at each frame time, world units.
        velocities: [F, N, 2] velocities at each frame time, units per second.
        collisions: every contact up to the time of the last frame, in time order.
    """

    object_ids: list[int]
    positions: np.ndarray
    velocities: np.ndarray
    collisions: list[Collision]

    def collision_pairs(self) -> set[frozenset[int]]:
        """The pairs of objects that touch at least once during the clip."""
        return {frozenset(c.object_ids) for c in self.collisions}


def contact_time(dp: np.ndarray, dv: np.ndarray, diameter: float) -> float:
    """Time until two discs at relative position ``dp`` with relative velocity ``dv`` touch, or inf.

    Solves |dp + dv t| = diameter for the first root t >= 0, for discs that are approaching
    (dp . dv < 0); discs moving apart or side by side never touch.

    >>> contact_time(np.array([3.0, 0.0]), np.array([-1.0, 0.0]), 1.0)
    2.0
    """
    b = float(dp @ dv)
    if b >= 0.0:
        return math.inf
    a = float(dv @ dv)
    c = float(dp @ dp) - diameter * diameter
    if c <= 0.0:  # already touching (numerically) and approaching: contact now
        return 0.0
    disc = b * b - a * c
    if disc < 0.0:
        return math.inf
    return max(0.0, c / (-b + math.sqrt(disc)))  # = (-b - sqrt(disc)) / a, stable for small a


def _next_contact(positions: np.ndarray, velocities: np.ndarray, diameter: float) -> tuple[float, int, int]:
    best, pair = math.inf, (-1, -1)
    n = len(positions)
    for i in range(n):
        for j in range(i + 1, n):
            t = contact_time(positions[j] - positions[i], velocities[j] - velocities[i], diameter)
            if t < best:
                best, pair = t, (i, j)
    return best, pair[0], pair[1]


def _resolve(positions: np.ndarray, velocities: np.ndarray, i: int, j: int) -> None:
    """Elastic collision of equal masses: swap the velocity components along the line of centres."""
    normal = positions[j] - positions[i]
    normal = normal / np.linalg.norm(normal)
    closing = float((velocities[i] - velocities[j]) @ normal)
    if closing > 0.0:
        velocities[i] -= closing * normal
        velocities[j] += closing * normal


def simulate(
    positions: np.ndarray,
    velocities: np.ndarray,
    object_ids: list[int],
    *,
    radius: float,
    n_frames: int,
    fps: float,
) -> Trajectory:
    """Simulate discs from their initial state over ``n_frames`` frames at ``fps``.

    Args:
        positions: [N, 2] initial centres (discs must not overlap).
        velocities: [N, 2] initial velocities.
        object_ids: the id of each disc, used in the collisions.
        radius: the radius of every disc.
        n_frames: frames of the clip; the clip lasts (n_frames - 1) / fps seconds.
        fps: frames per second.
    """
    pos = np.array(positions, dtype=np.float64).reshape(-1, 2)
    vel = np.array(velocities, dtype=np.float64).reshape(-1, 2)
    if len(pos) != len(vel) or len(pos) != len(object_ids):
        raise ValueError(f"simulate: {len(pos)} positions, {len(vel)} velocities, {len(object_ids)} ids")
    if n_frames < 1 or fps <= 0:
        raise ValueError(f"simulate: need n_frames >= 1 and fps > 0, got {n_frames} and {fps}")
    diameter = 2.0 * radius
    horizon = (n_frames - 1) / fps
    frame_pos = np.empty((n_frames, len(pos), 2))
    frame_vel = np.empty((n_frames, len(pos), 2))
    collisions: list[Collision] = []
    t, frame = 0.0, 0
    for _ in range(_MAX_EVENTS):
        dt, i, j = _next_contact(pos, vel, diameter) if len(pos) > 1 else (math.inf, -1, -1)
        t_event = t + dt
        while frame < n_frames and frame / fps <= t_event:
            frame_pos[frame] = pos + vel * (frame / fps - t)
            frame_vel[frame] = vel
            frame += 1
        if t_event > horizon + _EPS:
            break
        pos += vel * dt
        t = t_event
        _resolve(pos, vel, i, j)
        first, second = (i, j) if object_ids[i] < object_ids[j] else (j, i)
        mid = (pos[i] + pos[j]) / 2.0
        normal = (pos[second] - pos[first]) / np.linalg.norm(pos[second] - pos[first])
        collisions.append(
            Collision(
                (object_ids[first], object_ids[second]),
                t,
                min(n_frames - 1, round(t * fps)),
                (float(mid[0]), float(mid[1])),
                (float(normal[0]), float(normal[1])),
            )
        )
    else:
        raise RuntimeError(f"simulate: more than {_MAX_EVENTS} collisions; the scene is not physical")
    return Trajectory(list(object_ids), frame_pos, frame_vel, collisions)
