"""The rendered videos let objects be told apart: decode the mp4 with PyAV, find each object's pixels at
its annotated location, and read back its colour (nearest palette colour), shape (coloured share of
its bounding box) and material (a white highlight) from the pixels alone."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from videothinker.lab import LabConfig, generate_lab
from videothinker.lab.render import BACKGROUND, PALETTE, View


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _read_object(frame: np.ndarray, center: np.ndarray, radius_px: float) -> tuple[str, str, str]:
    """(colour, shape, material) of the object drawn around pixel ``center`` (column, row)."""
    reach = int(radius_px) + 3
    col, row = int(round(center[0])), int(round(center[1]))
    patch = frame[max(row - reach, 0) : row + reach + 1, max(col - reach, 0) : col + reach + 1].astype(int)
    drawn = np.abs(patch - BACKGROUND).sum(axis=-1) > 100  # body, rim and highlight; not table or ring
    saturated = patch.max(axis=-1) - patch.min(axis=-1) > 90  # the body colour alone
    names = list(PALETTE)
    median = np.median(patch[saturated], axis=0)
    color = names[int(np.argmin([np.abs(median - PALETTE[n]).sum() for n in names]))]
    # Drawn share of the bounding box: square ~1.0, disc ~0.79, disc with a ring ~0.55.
    rows, cols = np.nonzero(drawn)
    fill = drawn.sum() / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    shape = "cube" if fill > 0.9 else "sphere" if fill > 0.66 else "cylinder"
    material = "metal" if (patch.min(axis=-1) > 200).sum() >= 3 else "rubber"
    return color, shape, material


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    generate_lab(out, LabConfig(scenes=8, seed=5, frames=16))
    return out


def test_colours_shapes_and_materials_are_recoverable_from_the_decoded_frames(lab):
    view, config = View(112, 112, 3.0), LabConfig()
    radius_px = config.world.radius * view.scale
    seen, checked = set(), 0
    for index in range(8):
        annotation = json.loads((lab / "annotations" / f"annotation_{index:05d}.json").read_text())
        frames = _decode(lab / "videos" / f"video_{index:05d}.mp4")
        assert frames.shape == (16, 112, 112, 3)
        props = {o["object_id"]: o for o in annotation["object_property"]}
        for frame_id in (0, 8):
            objects = annotation["motion_trajectory"][frame_id]["objects"]
            xy = np.array([o["location"][:2] for o in objects])
            # objects that carry a contact mark by this frame (test_contact_marks checks those)
            marked = {
                i for c in annotation["collision"] if c["frame_id"] <= frame_id + 1 for i in c["object_ids"]
            }
            for k, obj in enumerate(objects):
                others = np.delete(xy, k, axis=0)
                if (
                    max(abs(xy[k])) > 3.0 - config.world.radius
                    or np.linalg.norm(others - xy[k], axis=1).min() < 2 * config.world.radius + 0.3
                    or obj["object_id"] in marked
                ):
                    continue  # partly out of view, touching a neighbour, or marked
                truth = props[obj["object_id"]]
                found = _read_object(frames[frame_id], view.to_pixels(xy[k]), radius_px)
                assert found == (truth["color"], truth["shape"], truth["material"]), (index, frame_id, obj)
                seen.add(found)
                checked += 1
    assert checked >= 40
    # The check covered every shape, both materials and most colours.
    assert {s for _, s, _ in seen} == {"cube", "sphere", "cylinder"}
    assert {m for _, _, m in seen} == {"metal", "rubber"}
    assert len({c for c, _, _ in seen}) >= 5


def test_contact_marks_show_every_collision_in_the_last_frame(lab):
    """A collision leaves a dot of the partner's colour on each object: in the clip's last frame (which
    frame sampling always keeps), every object still in view shows the colour of each object it hit."""
    view, config = View(112, 112, 3.0), LabConfig()
    radius_px = config.world.radius * view.scale
    checked = 0
    for index in range(8):
        annotation = json.loads((lab / "annotations" / f"annotation_{index:05d}.json").read_text())
        last = _decode(lab / "videos" / f"video_{index:05d}.mp4")[-1].astype(int)
        props = {o["object_id"]: o for o in annotation["object_property"]}
        where = {o["object_id"]: o["location"][:2] for o in annotation["motion_trajectory"][-1]["objects"]}
        partners = {i: set() for i in props}
        for c in annotation["collision"]:
            a, b = c["object_ids"]
            partners[a].add(b)
            partners[b].add(a)
        for obj, hit in partners.items():
            if max(abs(v) for v in where[obj]) > 3.0 - config.world.radius:
                continue  # partly out of view
            col, row = view.to_pixels(np.array(where[obj]))
            rows, cols = np.mgrid[: last.shape[0], : last.shape[1]]
            inside = np.hypot(cols + 0.5 - col, rows + 0.5 - row) <= 0.85 * radius_px
            colours = last[inside]
            for other in props:
                if other == obj:
                    continue
                near = (np.abs(colours - PALETTE[props[other]["color"]]).sum(axis=-1) < 60).sum()
                assert (near >= 8) == (other in hit), (index, obj, other, near)
            checked += len(hit)
    assert checked >= 6


@pytest.mark.parametrize("mark_radius", [0.3, 0.5])
def test_a_contact_mark_is_a_dot_of_mark_radius_inside_the_body(mark_radius):
    """A red sphere marked by a blue one on its right: the blue pixels form a disc of mark_radius times
    the object's radius (area within 15%), toward the contact, and none lies outside the body."""
    from videothinker.lab.render import ContactMark, render_frames
    from videothinker.lab.scene import ObjectSpec

    view, radius = View(112, 112, 3.0), 0.8
    objects = [ObjectSpec(0, "red", "rubber", "sphere")]
    mark = ContactMark(0, first_frame=1, direction=(1.0, 0.0), color="blue")
    frames = render_frames(objects, np.zeros((2, 1, 2)), view, radius, [mark], mark_radius).astype(int)
    blue = np.abs(frames - PALETTE["blue"]).sum(axis=-1) < 30  # [F, H, W]
    assert not blue[0].any()  # not before its first frame
    radius_px = radius * view.scale
    rows, cols = np.nonzero(blue[1])
    assert blue[1].sum() == pytest.approx(np.pi * (mark_radius * radius_px) ** 2, rel=0.15)
    # centred toward the contact (world +x is the frame's right), its far edge at 0.9 of the radius
    assert cols.mean() + 0.5 == pytest.approx(56 + (0.9 - mark_radius) * radius_px, abs=0.5)
    assert rows.mean() + 0.5 == pytest.approx(56, abs=0.5)
    assert (np.hypot(cols + 0.5 - 56, rows + 0.5 - 56) <= radius_px).all()
