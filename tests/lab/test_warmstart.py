"""The warm start: reasoning targets by hand, the label mask by hand (loss only on completion tokens),
and a short warm start that lowers the completion loss on its data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from videothinker.config import VideoConfig
from videothinker.data.clevrer import Annotation
from videothinker.data.records import load_records, parse_record
from videothinker.data.video import SampledVideo
from videothinker.lab import targets as lab_targets
from videothinker.lab import warmstart
from videothinker.lab.targets import (
    COLOR_PAIRS,
    choice_facts,
    collision_colors,
    reasoning_target,
    reasoning_targets,
)
from videothinker.lab.warmstart import (
    IGNORE_INDEX,
    PerceptionHead,
    WarmStartConfig,
    completion_batch,
    completion_loss,
    warm_start,
)
from videothinker.models.loading import load_model, load_processor

SMALL_VIDEO = {"fps": 2.0, "min_frames": 2, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136}


def _record(problem: str, options: list[str], solution: str):
    return parse_record({"problem": problem, "options": options, "solution": solution, "scene_index": 0})


# A chain on one lane: red cube (0) hits blue sphere (1), which hits green cylinder (2). The yellow
# cube (3) rests on another lane.
CHAIN_OBJECTS = {
    0: {"color": "red", "material": "rubber", "shape": "cube"},
    1: {"color": "blue", "material": "metal", "shape": "sphere"},
    2: {"color": "green", "material": "rubber", "shape": "cylinder"},
    3: {"color": "yellow", "material": "metal", "shape": "cube"},
}
CHAIN = {frozenset((0, 1)), frozenset((1, 2))}


def test_reasoning_target_by_hand():
    annotation = Annotation(CHAIN_OBJECTS, CHAIN)
    options = [
        "A. The sphere collides with the cylinder",  # seen; without the red cube: does not happen
        "B. The yellow cube and the cylinder collide",  # never
        "C. The sphere and the yellow object collide",  # never
    ]
    # Removing the striker cancels the chain: nothing listed happens, so all three "will not happen".
    will_not = _record("Without the red object, what will not happen?", options, "A,B,C")
    assert reasoning_target(will_not, annotation) == (
        "<think>Seen: A. Without it: none.</think><answer>A,B,C</answer>"
    )
    # Removing the resting yellow cube changes nothing: an observational question.
    observational = _record("Which of the following will happen if the yellow cube is removed?", options, "A")
    assert reasoning_target(observational, annotation) == (
        "<think>Seen: A. Without it: A.</think><answer>A</answer>"
    )
    # Removing the sphere inside the chain: the red cube travels on and hits the cylinder.
    middle = _record(
        "Which of the following will happen if the blue sphere is removed?",
        [
            "A. The red cube collides with the cylinder",  # not seen; happens without the sphere
            "B. The red cube and the yellow cube collide",  # never
            "C. The cylinder and the yellow object collide",  # never
        ],
        "A",
    )
    assert (
        reasoning_target(middle, annotation) == "<think>Seen: none. Without it: A.</think><answer>A</answer>"
    )
    # The shortcut answer reads the video: right when observational, wrong when inferential.
    assert choice_facts(observational, annotation).shortcut_answer == "A" == observational.solution
    assert choice_facts(middle, annotation).shortcut_answer == ""  # nothing listed is seen
    assert choice_facts(will_not, annotation).shortcut_answer == "B,C"  # "not happen": the unseen ones
    # A perception probe removes nothing: its answer is the "Seen" list.
    probe = parse_record(
        {
            "problem": "Which of the following collisions happen in the video?",
            "options": ["A. The red cube collides with the sphere", *options[1:]],
            "solution": "A",
            "scene_index": 0,
            "question_kind": "seen",
        }
    )
    assert reasoning_target(probe, annotation) == "<think>Seen: A.</think><answer>A</answer>"
    # The "pairs" style: every choice with its two objects' colours, in the order the choice names
    # them, and whether the video shows that collision.
    assert reasoning_target(middle, annotation, "pairs") == (
        "<think>Seen: A red green no, B red yellow no, C green yellow no. Without it: A.</think>"
        "<answer>A</answer>"
    )
    assert reasoning_target(probe, annotation, "pairs") == (
        "<think>Seen: A red blue yes, B yellow green no, C blue yellow no.</think><answer>A</answer>"
    )
    with pytest.raises(ValueError, match="reasoning style"):
        reasoning_target(probe, annotation, "words")
    # Described: the clip's collisions in words (from the annotation, whatever the question) come first,
    # before either style.
    assert reasoning_target(probe, annotation, describe=True) == (
        "<think>Collisions: blue-green, blue-red. Seen: A.</think><answer>A</answer>"
    )
    assert reasoning_target(middle, annotation, describe=True) == (
        "<think>Collisions: blue-green, blue-red. Seen: none. Without it: A.</think><answer>A</answer>"
    )
    assert reasoning_target(will_not, annotation, "pairs", describe=True) == (
        "<think>Collisions: blue-green, blue-red. Seen: A blue green yes, B yellow green no, C blue yellow no."
        " Without it: none.</think><answer>A,B,C</answer>"
    )
    # The "lookup" style: each pair named as the description names collisions (colours sorted, "-"),
    # and a verdict per choice for the counterfactual too.
    assert reasoning_target(middle, annotation, "lookup", describe=True) == (
        "<think>Collisions: blue-green, blue-red. Seen: A green-red no, B red-yellow no, C green-yellow no."
        " Without it: A yes, B no, C no.</think><answer>A</answer>"
    )
    assert reasoning_target(will_not, annotation, "lookup") == (
        "<think>Seen: A blue-green yes, B green-yellow no, C blue-yellow no. Without it: A no, B no, C no."
        "</think><answer>A,B,C</answer>"
    )
    assert reasoning_target(probe, annotation, "lookup") == (
        "<think>Seen: A blue-red yes, B green-yellow no, C blue-yellow no.</think><answer>A</answer>"
    )


def test_describe_collisions_by_hand():
    from videothinker.lab.targets import describe_collisions

    objects = {
        0: {"color": "red", "material": "rubber", "shape": "cube"},
        1: {"color": "red", "material": "metal", "shape": "sphere"},
        2: {"color": "cyan", "material": "rubber", "shape": "cylinder"},
    }
    # A colour two objects share names them in full; pairs and their names sorted.
    both = Annotation(objects, {frozenset((2, 1)), frozenset((0, 2))})
    assert describe_collisions(both) == "Collisions: cyan-red metal sphere, cyan-red rubber cube."
    assert describe_collisions(Annotation(objects, set())) == "Collisions: none."


def test_label_mask_covers_exactly_the_completion_tokens(tiny_qwen2_5_vl_dir):
    processor = load_processor(tiny_qwen2_5_vl_dir)
    tokenizer = processor.tokenizer
    frames = torch.randint(0, 255, (2, 3, 56, 56), dtype=torch.uint8)
    video = SampledVideo(frames=frames, fps=2.0, path="v.mp4")
    prompts = ["Which will happen?", "Which of the following will not happen if the cube is removed?"]
    completions = ["<think>Seen: A.</think><answer>A</answer>", "<think>x</think><answer>B,C</answer>"]
    batch = completion_batch(processor, prompts, [video, None], completions)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, completion in enumerate(completions):
        target = tokenizer(completion, add_special_tokens=False)["input_ids"] + [end]
        labelled = (labels[row] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
        # one contiguous run of len(target) positions, ending where the attention mask ends
        length = int(mask[row].sum())
        assert labelled == list(range(length - len(target), length))
        assert labels[row, labelled].tolist() == ids[row, labelled].tolist() == target
        # everything before it is the prompt as rendered for sampling, ending with the assistant turn
        prompt_text = tokenizer.decode(ids[row, : labelled[0]])
        assert prompt_text.endswith("<|im_start|>assistant\n")
        assert prompts[row] in prompt_text
        assert tokenizer.decode(ids[row, labelled]) == completion + "<|im_end|>"
        assert (labels[row, length:] == IGNORE_INDEX).all() and (mask[row, length:] == 0).all()
    # the video's tokens are in the first row's prompt and never labelled
    video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (ids[0] == video_pad).sum() > 0 and (labels[ids == video_pad] == IGNORE_INDEX).all()
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    assert torch.isfinite(completion_loss(model, batch))


def test_completion_loss_ignores_prompt_tokens(tiny_qwen2_5_vl_dir):
    """The loss equals the hand-computed mean cross-entropy over the labelled positions only."""
    processor = load_processor(tiny_qwen2_5_vl_dir)
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    batch = completion_batch(
        processor, ["Is it red?", "Which moves?"], [None, None], ["<answer>A</answer>", "B"]
    )
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss = completion_loss(model, batch)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    terms = []
    labels = batch["labels"]
    for row in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[row, t] != IGNORE_INDEX:  # position t is predicted by the logits at t - 1
                terms.append(-logprobs[row, t - 1, labels[row, t]])
    assert len(terms) == int((labels != IGNORE_INDEX).sum())
    torch.testing.assert_close(loss, torch.stack(terms).mean())


@pytest.fixture(scope="module")
def micro_lab(tmp_path_factory) -> Path:
    from videothinker.data.clevrer import convert, write_records
    from videothinker.lab import LabConfig, generate_lab

    root = tmp_path_factory.mktemp("lab")
    generate_lab(root, LabConfig(scenes=6, observational_ratio=0.5, seed=0, video_format="png"))
    records, _ = convert(
        root / "questions.json", root / "annotations", root / "videos", root / "r.jsonl", frame_fps=8
    )
    write_records(records, root / "r.jsonl")
    return root


def test_warm_start_lowers_completion_loss(tiny_qwen2_5_vl_dir, micro_lab, tmp_path):
    from videothinker.data.prompts import train_prompt
    from videothinker.data.video import load_visual

    records = load_records(micro_lab / "r.jsonl")[:6]
    targets = reasoning_targets(records, micro_lab / "annotations")
    assert all(t.startswith("<think>Seen: ") and t.endswith("</answer>") for t in targets)
    video = VideoConfig(**SMALL_VIDEO)
    config = WarmStartConfig(
        steps=12, learning_rate=3e-3, batch_size=6, device="cpu", video=video, eval_prompt_share=0
    )
    processor = load_processor(tiny_qwen2_5_vl_dir)
    visuals = [load_visual(r.video, r.data_type, video, 28, fps=r.extra["fps"]) for r in records]
    batch = completion_batch(processor, [train_prompt(r) for r in records], visuals, targets)

    def loss_of(folder) -> float:
        with torch.no_grad():
            return float(completion_loss(load_model(folder, dtype="float32"), batch))

    final = warm_start(tiny_qwen2_5_vl_dir, records, targets, tmp_path / "warm", config)
    before, after = loss_of(tiny_qwen2_5_vl_dir), loss_of(final)
    assert after < 0.8 * before, (before, after)
    log = [json.loads(line) for line in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 13))
    assert (final / "model.safetensors").is_file() and (final / "tokenizer_config.json").is_file()


def test_plan_batches_walks_shuffled_epochs():
    records = [_record(f"q{i}", ["A. x", "B. y"], "<answer>A</answer>") for i in range(6)]
    config = WarmStartConfig(batch_size=4, seed=3, eval_prompt_share=0.5)
    plans = warmstart.plan_batches(records, config, 3)
    picked = [i for indices, _ in plans for i in indices]
    # 3 batches of 4 = 12 picks = two whole epochs of 6: each epoch holds every record once
    assert sorted(picked[:6]) == list(range(6)) and sorted(picked[6:]) == list(range(6))
    assert all(len(indices) == len(as_eval) == 4 for indices, as_eval in plans)
    assert plans == warmstart.plan_batches(records, config, 3)  # seeded
    assert [p for p, _ in warmstart.plan_batches(records, WarmStartConfig(batch_size=4, seed=4), 3)] != [
        p for p, _ in plans
    ]
    none = WarmStartConfig(batch_size=4, seed=3, eval_prompt_share=0.0)
    assert not any(e for _, as_eval in warmstart.plan_batches(records, none, 3) for e in as_eval)
    with pytest.raises(ValueError, match="workers"):
        warmstart.batch_workers(-1, "cuda")


def test_warm_start_with_batch_workers_equals_in_process(tiny_qwen2_5_vl_dir, micro_lab, tmp_path):
    """Worker processes only build the batches the seed planned: the same losses, the same weights."""
    from safetensors.torch import load_file

    records = load_records(micro_lab / "r.jsonl")[:6]
    targets = reasoning_targets(records, micro_lab / "annotations")
    config = WarmStartConfig(
        steps=3, learning_rate=3e-3, batch_size=4, device="cpu", video=VideoConfig(**SMALL_VIDEO), workers=0
    )
    serial = warm_start(tiny_qwen2_5_vl_dir, records, targets, tmp_path / "serial", config)
    pooled = warm_start(
        tiny_qwen2_5_vl_dir, records, targets, tmp_path / "pooled", replace(config, workers=2)
    )

    def losses(folder: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (folder.parent / "log.jsonl").read_text().splitlines()]

    assert losses(serial) == losses(pooled) and len(losses(serial)) == 3
    a, b = load_file(serial / "model.safetensors"), load_file(pooled / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    untouched = load_file(Path(tiny_qwen2_5_vl_dir) / "model.safetensors")
    assert any(not torch.equal(a[k], untouched[k]) for k in a)  # it trained


def test_doctests():
    import doctest

    assert doctest.testmod(warmstart).failed == 0
    assert doctest.testmod(lab_targets).failed == 0
    assert doctest.testmod(lab_targets).attempted > 0


def test_collision_colors_by_hand():
    objects = {
        0: {"color": "red"},
        1: {"color": "blue"},
        2: {"color": "green"},
        3: {"color": "red"},  # a repeated colour (the world before issue 14)
    }
    labels = collision_colors(Annotation(objects, {frozenset((0, 1)), frozenset((1, 2)), frozenset((0, 3))}))
    assert len(labels) == len(COLOR_PAIRS) == 28  # CLEVRER's 8 colours, unordered pairs
    hot = {COLOR_PAIRS[i] for i, v in enumerate(labels) if v == 1.0}
    # red-blue and blue-green; red-red is one colour, not a pair, and is left out
    assert hot == {frozenset(("red", "blue")), frozenset(("blue", "green"))}
    assert collision_colors(Annotation(objects, set())) == [0.0] * 28


def test_perception_loss_is_max_pooled_binary_cross_entropy(tiny_qwen2_5_vl_dir):
    """The head's loss equals a by-hand computation: each video's score per pair is its best token's,
    then the mean binary cross-entropy over videos and pairs."""
    processor = load_processor(tiny_qwen2_5_vl_dir)
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    head = PerceptionHead(model, model.get_input_embeddings().embedding_dim)
    torch.manual_seed(0)
    videos = [
        SampledVideo(
            frames=torch.randint(0, 255, (2, 3, 56, 56 * k), dtype=torch.uint8), fps=2.0, path=f"{k}.mp4"
        )
        for k in (1, 2)  # two videos of different sizes: 4 and 8 video tokens
    ]
    batch = completion_batch(processor, ["a", "b"], videos, ["<answer>A</answer>"] * 2)
    targets = torch.zeros(2, len(COLOR_PAIRS))
    targets[0, 3] = targets[1, 0] = targets[1, 27] = 1.0
    with torch.no_grad():
        completion_loss(model, batch)  # the forward the head's hook reads
        tokens = model.model.get_video_features(
            batch["pixel_values_videos"], batch["video_grid_thw"]
        ).pooler_output
        loss = head.loss(batch["video_grid_thw"], targets)
    assert [t.shape[0] for t in tokens] == [4, 8]
    terms = []
    for video, tokens_v in enumerate(tokens):
        scores = head.score(tokens_v).max(dim=0).values  # [28]
        for pair in range(len(COLOR_PAIRS)):
            p = torch.sigmoid(scores[pair])
            y = targets[video, pair]
            terms.append(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_perception_steps_train_the_vision_tower_alone(tiny_qwen2_5_vl_dir, micro_lab, tmp_path):
    """The vision-only phase lowers the perception loss on its data and changes no language-model
    weight; the warm start after it logs both losses."""
    from safetensors.torch import load_file

    records = load_records(micro_lab / "r.jsonl")[:6]
    targets = reasoning_targets(records, micro_lab / "annotations")
    labels = [collision_colors(a) for a in lab_targets.load_annotations(records, micro_lab / "annotations")]
    assert any(any(row) for row in labels)
    video = VideoConfig(**SMALL_VIDEO)
    common = {"learning_rate": 3e-3, "batch_size": 6, "device": "cpu", "video": video, "eval_prompt_share": 0}
    with pytest.raises(ValueError, match="perception"):
        warm_start(
            tiny_qwen2_5_vl_dir,
            records,
            targets,
            tmp_path / "x",
            WarmStartConfig(steps=1, perception_weight=1.0, **common),
        )
    config = WarmStartConfig(steps=0, perception_weight=1.0, perception_steps=15, **common)
    final = warm_start(tiny_qwen2_5_vl_dir, records, targets, tmp_path / "vision", config, labels)
    log = [json.loads(line) for line in (tmp_path / "vision" / "log.jsonl").read_text().splitlines()]
    assert [row["phase"] for row in log] == ["perception"] * 15
    assert log[-1]["loss"] < 0.7 * log[0]["loss"], (log[0]["loss"], log[-1]["loss"])
    before, after = (
        load_file(tiny_qwen2_5_vl_dir / "model.safetensors"),
        load_file(final / "model.safetensors"),
    )
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".visual." in name or name.startswith("visual.") for name in changed), sorted(
        changed
    )[:5]
    both = WarmStartConfig(steps=2, perception_weight=0.5, perception_steps=1, **common)
    warm_start(tiny_qwen2_5_vl_dir, records, targets, tmp_path / "both", both, labels)
    log = [json.loads(line) for line in (tmp_path / "both" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3] and log[0]["phase"] == "perception"
    for row in log[1:]:
        assert row["loss"] == pytest.approx(row["completion_loss"] + 0.5 * row["perception_loss"], rel=1e-5)


def test_description_records_by_hand(monkeypatch):
    """Two open-ended questions per scene (one per scene, however many records it has): the colours of
    its objects (in CLEVRER's colour order) and the pairs that collide (as the described warm start names
    them); nothing of the answer is in the question's text."""
    objects = {
        0: {"color": "purple", "material": "rubber", "shape": "cube"},
        1: {"color": "red", "material": "metal", "shape": "sphere"},
        2: {"color": "cyan", "material": "rubber", "shape": "cylinder"},
    }
    annotations = {
        7: Annotation(objects, {frozenset((0, 1)), frozenset((1, 2))}),
        8: Annotation(objects, set()),
    }
    records = [
        parse_record(
            {"problem": "Q", "options": ["x", "y"], "solution": "A", "video": "v7.mp4", "scene_index": 7}
        ),
        parse_record(
            {"problem": "Q2", "options": ["x", "y"], "solution": "B", "video": "v7.mp4", "scene_index": 7}
        ),
        parse_record(
            {"problem": "Q", "options": ["x", "y"], "solution": "A", "video": "v8.mp4", "scene_index": 8}
        ),
    ]
    monkeypatch.setattr(
        lab_targets, "load_annotations", lambda rs, _: [annotations[int(r.extra["scene_index"])] for r in rs]
    )
    described, answers = lab_targets.description_records(records, "unused")
    assert [(r.problem, r.solution, r.extra["scene_index"], r.video) for r in described] == [
        (lab_targets.DESCRIBE_COLORS, "red, cyan, purple", 7, "v7.mp4"),
        (lab_targets.DESCRIBE_COLLISIONS, "cyan-red, purple-red", 7, "v7.mp4"),
        (lab_targets.DESCRIBE_COLORS, "red, cyan, purple", 8, "v8.mp4"),
        (lab_targets.DESCRIBE_COLLISIONS, "none", 8, "v8.mp4"),
    ]
    assert answers[1] == "<think>Seen: cyan-red, purple-red.</think><answer>cyan-red, purple-red</answer>"
    assert all(r.problem_type == "free-form" and not r.options for r in described)
    assert not any(c in r.problem for r in described for c in ("red", "cyan", "purple"))


def test_collisions_described_reads_the_opening_sentence_exactly():
    from videothinker.lab.targets import collisions_described, describe_collisions, read_collisions

    annotation = Annotation({i: CHAIN_OBJECTS[i] for i in (0, 1, 2)}, CHAIN)
    assert read_collisions("<think>Seen: A.</think>") is None
    assert collisions_described(f"<think>{describe_collisions(annotation)} Seen: A.</think>", annotation)
    # The pairs are a set: order does not matter; a missing, an extra or a wrong pair does.
    assert collisions_described("<think>Collisions: blue-red, blue-green. Seen: A.</think>", annotation)
    assert not collisions_described("<think>Collisions: blue-red. Seen: A.</think>", annotation)
    assert not collisions_described("<think>Collisions: blue-red, blue-green, green-red.</think>", annotation)
    assert not collisions_described("<think>Collisions: none.</think>", annotation)
    assert not collisions_described("<think>Seen: A.</think>", annotation)
    assert collisions_described("<think>Collisions: none.</think>", Annotation(annotation.objects, set()))


def test_described_share_over_predictions(tmp_path):
    from videothinker.demo.basemodel import described_share

    annotations = tmp_path / "annotations"
    annotations.mkdir()
    scenes = {0: [[0, 1]], 1: []}  # scene 0: red and blue collide; scene 1: no collision
    for index, collisions in scenes.items():
        (annotations / f"annotation_{index:05d}.json").write_text(
            json.dumps(
                {
                    "object_property": [
                        {"object_id": 0, "color": "red", "material": "rubber", "shape": "cube"},
                        {"object_id": 1, "color": "blue", "material": "metal", "shape": "sphere"},
                    ],
                    "collision": [{"object_ids": ids} for ids in collisions],
                }
            )
        )
    records = tmp_path / "records.jsonl"
    records.write_text(
        "\n".join(
            json.dumps(
                {
                    "problem": "Q?",
                    "options": ["A. x"],
                    "solution": "<answer>A</answer>",
                    "problem_id": f"{i}_0",
                    "scene_index": i,
                }
            )
            for i in scenes
        )
    )
    rows = [
        {"id": "0_0", "output": "<think>Collisions: blue-red. Seen: A.</think>"},  # right
        {"id": "1_0", "output": "<think>Collisions: blue-red. Seen: A.</think>"},  # wrong: none there
        {"id": "1_0", "output": "<think>Collisions: none. Seen: none.</think>"},  # right
        {"id": "0_0", "output": "<answer>A</answer>"},  # no description: wrong
        {"id": "9_0", "output": "<think>Collisions: none.</think>"},  # not one of the records: left out
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert described_share(predictions, [records], annotations) == pytest.approx(2 / 4)
    predictions.write_text("")
    assert described_share(predictions, [records], annotations) is None
