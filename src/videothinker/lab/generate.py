"""Generation of a lab data set in the official CLEVRER layout and schema, and its split by scene.

Per scene: sample the objects and their start (`scene`), simulate the video (`physics`), simulate it
again once per removed object, build one candidate question per object and the scene's perception
probe (`questions`), render and write the mp4 (`render`) and the annotation. Then the candidates of
all scenes are selected so that the observational share matches the request, and the questions file
and the probes file are written.

Layout (flat by default; ``nested=True`` mirrors the official sub-folders of 1000 scenes)::

    DIR/videos/video_00000.mp4            DIR/videos/video_00000-01000/video_00000.mp4
      (``video_format="png"``: DIR/videos/video_00000/frame_000.png, ... instead: no PyAV needed)
    DIR/annotations/annotation_00000.json DIR/annotations/annotation_00000-01000/annotation_00000.json
    DIR/questions.json                    (the counterfactual questions, official schema)
    DIR/seen.json                         (one perception probe per scene, same schema; not CLEVRER's)
    DIR/lab.json                          (the generation settings and counts)

``lab.json`` holds every setting, so `LabConfig.from_json` (``lab generate --config DIR/lab.json``)
makes another set of the same world and rendering.

Each scene draws from its own random generator, seeded by (seed, scene index), so a scene is the same
whatever the number of scenes or workers, and the same seed gives the same files every time.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from videothinker.lab.physics import Trajectory, simulate
from videothinker.lab.questions import (
    OBSERVATIONAL,
    Question,
    SeenQuestion,
    candidate_question,
    seen_question,
    select_questions,
)
from videothinker.lab.render import LEGACY_MARK_RADIUS, MARK_EDGE, View, contact_marks, render_frames
from videothinker.lab.scene import Scene, WorldConfig, sample_scene

QUESTIONS_FILE = "questions.json"
SEEN_FILE = "seen.json"
SETTINGS_FILE = "lab.json"
VIDEO_FORMATS = ("mp4", "png")
# The world of sets generated before the recommended world (lab.json without contact_marks).
LEGACY_WORLD = {
    "radius": 0.55,
    "min_objects": 3,
    "max_objects": 6,
    "lanes": (-1.9, 0.0, 1.9),
    "distinct_colors": False,
}


@dataclass(frozen=True)
class LabConfig:
    """Settings of one generated set; the defaults are the recommended world and rendering (docs/LAB.md).

    Attributes:
        scenes: number of scenes (videos).
        observational_ratio: share of observational questions (0.74: the paper's CLEVRER share).
        seed: random seed; with the scene index it seeds each scene.
        frames / fps: clip length and rate (32 frames at 8 fps: 4 s).
        size: frame (width, height); multiples of 28 suit Qwen's processors.
        questions_per_scene: at most this many questions per scene.
        start_index: index of the first scene.
        nested: official sub-folders of 1000 scenes.
        videos: write the videos (else annotations and questions only).
        video_format: "mp4" (H.264, needs PyAV) or "png" (a folder of frames per video, no PyAV).
        contact_marks: a collision leaves a dot of the partner's colour on each object's rim
            (`videothinker.lab.render`), visible in every later frame.
        mark_radius: a contact mark's radius, as a fraction of the object's (at most `MARK_EDGE`).
        workers: processes generating scenes.
        world: the world's geometry, objects and motion.
    """

    scenes: int = 100
    observational_ratio: float = 0.74
    seed: int = 0
    frames: int = 32
    fps: int = 8
    size: tuple[int, int] = (112, 112)
    questions_per_scene: int = 3
    start_index: int = 0
    nested: bool = False
    videos: bool = True
    video_format: str = "mp4"
    contact_marks: bool = True
    mark_radius: float = 0.5
    workers: int = 1
    world: WorldConfig = field(default_factory=WorldConfig)

    @classmethod
    def from_json(cls, settings: dict, **changes) -> LabConfig:
        """The config a set's ``lab.json`` records (its counts ignored), with ``changes`` over it.

        A field the file lacks (a set written before the field existed) takes its old default only
        where that changes the world: ``contact_marks`` False and the world as it was then, so the file
        still means the set it describes; other missing fields take today's defaults.
        """
        names = {f.name for f in fields(cls)}
        world_names = {f.name for f in fields(WorldConfig)}
        values = {k: v for k, v in settings.items() if k in names and k != "world"}
        unknown = set(settings) - names - {"questions", "observational", "seen"}
        if unknown:
            raise ValueError(f"lab settings: unknown fields {', '.join(sorted(unknown))}")
        if "size" in values:
            values["size"] = tuple(values["size"])
        world = dict(settings.get("world", {}))
        if set(world) - world_names:
            raise ValueError(
                f"lab settings: unknown world fields {', '.join(sorted(set(world) - world_names))}"
            )
        if "contact_marks" not in settings:  # written before the recommended world: its old defaults
            values["contact_marks"] = False
            world = {**LEGACY_WORLD, **world}
        if "mark_radius" not in settings:  # written before marks had a size: the first marks
            values["mark_radius"] = LEGACY_MARK_RADIUS
        for key in ("speed_range", "lanes", "colors"):
            if key in world:
                world[key] = tuple(world[key])
        values.update(changes)
        return cls(**{**values, "world": changes.get("world", WorldConfig(**world))})

    def __post_init__(self):
        if self.scenes < 1:
            raise ValueError(f"scenes must be >= 1, got {self.scenes}")
        if not 0.0 <= self.observational_ratio <= 1.0:
            raise ValueError(f"observational ratio must be in [0, 1], got {self.observational_ratio}")
        if self.frames < 2 or self.fps < 1:
            raise ValueError(f"need frames >= 2 and fps >= 1, got {self.frames} and {self.fps}")
        width, height = self.size
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(
                f"size must be even and at least 16x16 (H.264 needs even sizes), got {width}x{height}"
            )
        if self.questions_per_scene < 1:
            raise ValueError(f"questions per scene must be >= 1, got {self.questions_per_scene}")
        if self.video_format not in VIDEO_FORMATS:
            raise ValueError(
                f"video format must be one of {', '.join(VIDEO_FORMATS)}, got {self.video_format!r}"
            )
        if not 0.0 < self.mark_radius <= MARK_EDGE:
            raise ValueError(f"mark radius must be in (0, {MARK_EDGE}], got {self.mark_radius}")
        if self.start_index < 0 or self.workers < 1:
            raise ValueError("start index must be >= 0 and workers >= 1")


@dataclass
class LabSummary:
    """What a generation wrote (``seen``: the perception probes, one per scene with a collision)."""

    out: Path
    scenes: int
    questions: int
    observational: int
    seen: int = 0

    @property
    def inferential(self) -> int:
        return self.questions - self.observational

    @property
    def ratio(self) -> float:
        """The observational share of the questions (0 when there are none)."""
        return self.observational / self.questions if self.questions else 0.0


def media_path(kind: str, index: int, nested: bool) -> str:
    """Relative path of a scene's video (kind "video") or annotation (kind "annotation")."""
    folder, suffix = {"video": ("videos", ".mp4"), "annotation": ("annotations", ".json")}[kind]
    name = f"{kind}_{index:05d}{suffix}"
    if not nested:
        return f"{folder}/{name}"
    low = index // 1000 * 1000
    return f"{folder}/{kind}_{low:05d}-{low + 1000:05d}/{name}"


def _round(values, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def annotation_json(scene: Scene, trajectory: Trajectory, config: LabConfig) -> dict:
    """The official annotation of a scene: object_property, motion_trajectory, collision."""
    world = config.world
    z = world.radius  # objects rest on the table: centre height = radius
    motion = []
    for frame_id in range(config.frames):
        objects = []
        for obj in scene.objects:
            x, y = trajectory.positions[frame_id, obj.object_id]
            vx, vy = trajectory.velocities[frame_id, obj.object_id]
            objects.append(
                {
                    "object_id": obj.object_id,
                    "location": _round([x, y, z]),
                    "orientation": [0.0, 0.0, 0.0],
                    "velocity": _round([vx, vy, 0.0]),
                    "angular_velocity": [0.0, 0.0, 0.0],
                    "inside_camera_view": bool(max(abs(x), abs(y)) <= world.half_extent),
                }
            )
        motion.append({"frame_id": frame_id, "objects": objects})
    return {
        "scene_index": scene.index,
        "video_filename": f"video_{scene.index:05d}.mp4",
        "object_property": [o.to_json() for o in scene.objects],
        "motion_trajectory": motion,
        "collision": [
            {"object_ids": list(c.object_ids), "frame_id": c.frame_id, "location": _round([*c.location, z])}
            for c in trajectory.collisions
        ],
    }


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def build_scene(index: int, config: LabConfig, out: Path) -> tuple[list[Question], SeenQuestion | None]:
    """Simulate, write the annotation (and the video) of one scene; return its candidate questions and
    its perception probe."""
    from videothinker.data.video import write_video

    rng = np.random.default_rng([config.seed, index])
    world = config.world
    scene = sample_scene(index, rng, world)
    ids = [o.object_id for o in scene.objects]
    run = dict(radius=world.radius, n_frames=config.frames, fps=config.fps)
    factual = simulate(scene.positions, scene.velocities, ids, **run)
    pairs = factual.collision_pairs()
    candidates = []
    for removed in ids:
        keep = [i for i in ids if i != removed]
        counterfactual = simulate(scene.positions[keep], scene.velocities[keep], keep, **run)
        question = candidate_question(
            index, scene.objects, removed, pairs, counterfactual.collision_pairs(), rng, world.distinct_colors
        )
        if question is not None:
            candidates.append(question)
    candidates = [candidates[int(i)] for i in rng.permutation(len(candidates))]
    probe = seen_question(index, scene.objects, pairs, rng, world.distinct_colors)

    _write_json(out / media_path("annotation", index, config.nested), annotation_json(scene, factual, config))
    if config.videos:
        view = View(config.size[0], config.size[1], world.half_extent)
        marks = contact_marks(scene.objects, factual.collisions, config.fps) if config.contact_marks else []
        frames = render_frames(
            scene.objects, factual.positions, view, world.radius, marks, config.mark_radius
        )
        path = out / media_path("video", index, config.nested)
        if config.video_format == "png":
            write_frames(path.with_suffix(""), frames)
        else:
            write_video(path, frames, fps=config.fps)
    return candidates, probe


def write_frames(folder: Path, frames: np.ndarray) -> None:
    """Write uint8 RGB frames [F, H, W, 3] as ``folder``/frame_000.png, ... (written to a temporary
    folder, then renamed): a video that `videothinker.data.video.load_visual` reads as data_type
    "frame" without PyAV."""
    import shutil

    from PIL import Image

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp / f"frame_{i:03d}.png", compress_level=1)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _build_scene_job(job: tuple[int, LabConfig, Path]) -> tuple[list[Question], SeenQuestion | None]:
    return build_scene(*job)


def generate_lab(out: str | Path, config: LabConfig) -> LabSummary:
    """Generate ``config.scenes`` scenes into ``out`` (see the module docstring for the layout)."""
    from videothinker.console import progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(config.start_index, config.start_index + config.scenes)
    jobs = [(i, config, out) for i in indices]
    results: list[tuple[list[Question], SeenQuestion | None]] = []
    with progress() as bar:
        task = bar.add_task("lab scenes", total=len(jobs), info="")
        if config.workers > 1:
            with ProcessPoolExecutor(config.workers) as pool:
                for result in pool.map(_build_scene_job, jobs, chunksize=8):
                    results.append(result)
                    bar.advance(task)
        else:
            for job in jobs:
                results.append(_build_scene_job(job))
                bar.advance(task)
    candidates = [questions for questions, _ in results]

    selected = select_questions(candidates, config.observational_ratio, config.questions_per_scene)
    entries = [
        {
            "scene_index": index,
            "video_filename": f"video_{index:05d}.mp4",
            "questions": [q.to_json(question_id) for question_id, q in enumerate(questions)],
        }
        for index, questions in zip(indices, selected)
    ]
    _write_json(out / QUESTIONS_FILE, entries)
    probes = [
        {"scene_index": index, "video_filename": f"video_{index:05d}.mp4", "questions": [probe.to_json(0)]}
        for index, (_, probe) in zip(indices, results)
        if probe is not None
    ]
    _write_json(out / SEEN_FILE, probes)
    total = sum(len(s) for s in selected)
    observational = sum(q.kind == OBSERVATIONAL for s in selected for q in s)
    summary = LabSummary(out, config.scenes, total, observational, len(probes))
    settings = asdict(config)
    settings.update(questions=total, observational=observational, seen=len(probes))
    _write_json(out / SETTINGS_FILE, settings)
    return summary


def load_lab_config(path: str | Path, **changes) -> LabConfig:
    """The `LabConfig` of a set's ``lab.json`` (a file, or the set's folder), with ``changes`` over it."""
    path = Path(path)
    if path.is_dir():
        path = path / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"lab settings not found: {path}")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    try:
        return LabConfig.from_json(settings, **changes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def split_by_scene(entries: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split the entries of a questions file into train and test by scene (a scene's questions stay
    together, so no test video is seen in training). Returns (train, test), each in scene order."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    if len(entries) < 2:
        raise ValueError(f"need at least 2 scenes to split, got {len(entries)}")
    order = np.random.default_rng(seed).permutation(len(entries))
    n_test = min(len(entries) - 1, max(1, round(test_fraction * len(entries))))
    test = set(order[:n_test].tolist())
    return (
        [e for i, e in enumerate(entries) if i not in test],
        [e for i, e in enumerate(entries) if i in test],
    )


def write_split(questions: str | Path, test_fraction: float, seed: int) -> tuple[Path, Path]:
    """Split a questions file by scene into ``<stem>_train.json`` and ``<stem>_test.json`` beside it."""
    questions = Path(questions)
    if not questions.is_file():
        raise FileNotFoundError(f"questions file not found: {questions}")
    entries = json.loads(questions.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{questions}: expected a list of scenes (the official questions schema)")
    train, test = split_by_scene(entries, test_fraction, seed)
    paths = (
        questions.with_name(f"{questions.stem}_train.json"),
        questions.with_name(f"{questions.stem}_test.json"),
    )
    for path, part in zip(paths, (train, test)):
        _write_json(path, part)
    return paths
