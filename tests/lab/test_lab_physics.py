"""Physics of the lab: collision times worked out by hand, the Newton's-cradle chain and its
counterfactual, and conservation laws on random oblique collisions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videothinker.lab.physics import contact_time, simulate


def test_contact_time_by_hand():
    # Centres 3 apart closing at 1 unit/s, diameter 1: they touch after 3 - 1 = 2 s.
    assert contact_time(np.array([3.0, 0.0]), np.array([-1.0, 0.0]), 1.0) == pytest.approx(2.0)
    # Offset by 0.6 sideways: touch when the along-axis gap is sqrt(1 - 0.36) = 0.8, after 3 - 0.8 = 2.2 s.
    assert contact_time(np.array([3.0, 0.6]), np.array([-1.0, 0.0]), 1.0) == pytest.approx(2.2)
    # Moving apart, passing wide (offset 1.2 > diameter), or at rest: never.
    assert contact_time(np.array([3.0, 0.0]), np.array([1.0, 0.0]), 1.0) == math.inf
    assert contact_time(np.array([3.0, 1.2]), np.array([-1.0, 0.0]), 1.0) == math.inf
    assert contact_time(np.array([3.0, 0.0]), np.array([0.0, 0.0]), 1.0) == math.inf


def test_head_on_hit_stops_the_striker_and_moves_the_target():
    # r = 0.5; A at x=-2 moving +1, B at rest at 0: contact when A reaches -1, at t = 1 s = frame 4 at 4 fps.
    traj = simulate(
        np.array([[-2.0, 0.0], [0.0, 0.0]]),
        np.array([[1.0, 0.0], [0.0, 0.0]]),
        [0, 1],
        radius=0.5,
        n_frames=9,
        fps=4,
    )
    [hit] = traj.collisions
    assert hit.object_ids == (0, 1) and hit.time == pytest.approx(1.0) and hit.frame_id == 4
    assert hit.location == pytest.approx((-0.5, 0.0))
    np.testing.assert_allclose(traj.positions[2], [[-1.5, 0.0], [0.0, 0.0]])  # t = 0.5
    np.testing.assert_allclose(traj.positions[8], [[-1.0, 0.0], [1.0, 0.0]])  # t = 2: A stopped, B moved 1
    np.testing.assert_allclose(traj.velocities[8], [[0.0, 0.0], [1.0, 0.0]])


def test_chain_and_its_counterfactual():
    # A (-3, moving +1) -> B (-1) -> C (1), r = 0.5: A hits B at t=1, B hits C at t=2.
    pos = np.array([[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    vel = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    run = dict(radius=0.5, n_frames=11, fps=2)  # 5 s
    factual = simulate(pos, vel, [0, 1, 2], **run)
    assert [(c.object_ids, c.time) for c in factual.collisions] == [
        ((0, 1), pytest.approx(1.0)),
        ((1, 2), pytest.approx(2.0)),
    ]
    # Without B, A travels on and hits C when it reaches 0: t = 3 (a collision not in the video).
    without_b = simulate(pos[[0, 2]], vel[[0, 2]], [0, 2], **run)
    assert [(c.object_ids, c.time) for c in without_b.collisions] == [((0, 2), pytest.approx(3.0))]
    # Without A, nothing moves: B and C never collide.
    assert simulate(pos[1:], vel[1:], [1, 2], **run).collisions == []


def test_collisions_after_the_last_frame_are_not_in_the_clip():
    pos, vel = np.array([[-2.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])
    assert simulate(pos, vel, [0, 1], radius=0.5, n_frames=4, fps=4).collisions == []  # clip ends at 0.75 s
    assert len(simulate(pos, vel, [0, 1], radius=0.5, n_frames=5, fps=4).collisions) == 1  # ends at 1 s


@pytest.mark.parametrize("seed", range(5))
def test_random_oblique_collisions_conserve_momentum_and_energy_and_never_overlap(seed):
    rng = np.random.default_rng(seed)
    grid = np.array([(x, y) for x in range(4) for y in range(3)], dtype=float) * 1.5
    pos = grid + rng.uniform(-0.2, 0.2, grid.shape)
    vel = rng.normal(0.0, 1.0, grid.shape)
    traj = simulate(pos, vel, list(range(len(pos))), radius=0.5, n_frames=41, fps=8)
    assert len(traj.collisions) >= 3
    momentum = traj.velocities.sum(axis=1)
    energy = (traj.velocities**2).sum(axis=(1, 2))
    np.testing.assert_allclose(momentum, np.broadcast_to(vel.sum(axis=0), momentum.shape), atol=1e-9)
    np.testing.assert_allclose(energy, (vel**2).sum(), rtol=1e-9)
    gaps = np.linalg.norm(traj.positions[:, :, None] - traj.positions[:, None], axis=-1)
    gaps += np.eye(len(pos)) * 10
    assert gaps.min() >= 1.0 - 1e-9
    # Between events every disc moves in a straight line: positions follow the recorded velocities.
    quiet = [f for f in range(40) if not any(f / 8 < c.time <= (f + 1) / 8 for c in traj.collisions)]
    for f in quiet:
        np.testing.assert_allclose(
            traj.positions[f + 1], traj.positions[f] + traj.velocities[f] / 8, atol=1e-9
        )
