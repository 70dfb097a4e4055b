"""Warm start: a short supervised fine-tuning that gives a tiny random-init model partial competence.

The paper starts RL from a pretrained model that already reasons a little (Qwen2.5-VL-3B: 73.9% on
CLEVRER's inferential questions zero-shot). A tiny model built by `videothinker.models.tiny` knows
nothing, so the demo first teaches it, briefly, on lab questions of both kinds, in the RL answer
format. This stand-in for pretraining is plain teacher forcing: next-token cross-entropy on the
completion tokens only (the prompt, video tokens included, is context, not target).

Targets spell out a short chain of thought from the scene's annotation, then the answer::

    <think>Seen: A, C. Without it: A, D.</think><answer>A,D</answer>

"Seen" lists the choices whose collision the video shows; "Without it" those that happen once the
object is removed (the counterfactual, read from the question's correct choices); the answer is the
latter, or its complement for "what will *not* happen?". An observational question has the same two
lists; an inferential one does not. The shortcut the paper describes is answering from the first list.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from videothinker.config import VideoConfig
from videothinker.console import print0, progress
from videothinker.data.clevrer import Annotation, parse_choice, parse_question, resolve
from videothinker.data.records import Record

IGNORE_INDEX = -100
LOG_FILE = "log.jsonl"


def _letters(letters: list[str]) -> str:
    return ", ".join(letters) if letters else "none"


@dataclass(frozen=True)
class ChoiceFacts:
    """What a counterfactual question's choices are, read from the scene's annotation.

    Attributes:
        seen: letters of the choices whose collision the video shows; unseen: the others.
        happens: letters of the choices that happen once the object is removed (the counterfactual).
        negated: the question asks what will *not* happen.
    """

    seen: list[str]
    unseen: list[str]
    happens: list[str]
    negated: bool

    @property
    def shortcut_answer(self) -> str:
        """The answer read off the video (the perceptual shortcut): the seen collisions, or the unseen
        ones for "will not happen". Right for observational questions, wrong for inferential ones."""
        return ",".join(self.unseen if self.negated else self.seen)


def choice_facts(record: Record, annotation: Annotation) -> ChoiceFacts:
    """The `ChoiceFacts` of a lab (or CLEVRER) counterfactual record written by
    `videothinker.data.clevrer` (question text + lettered choices), with its scene's annotation. A
    perception probe (question_kind "seen") removes nothing: what happens is what the video shows."""
    if record.question_kind == "seen":
        removed, negated = None, False
    else:
        removed_text, negated = parse_question(record.problem)
        removed = resolve(removed_text, annotation.objects)
    answer = record.solution.split(",")
    seen, unseen, happens = [], [], []
    for letter, option in zip(record.letters, record.options):
        a, b = (
            resolve(d, annotation.objects, exclude=removed) for d in parse_choice(option.split(".", 1)[1])
        )
        (seen if frozenset((a, b)) in annotation.collisions else unseen).append(letter)
        if (letter in answer) != negated:
            happens.append(letter)
    return ChoiceFacts(seen, unseen, happens, negated)


def describe_collisions(annotation: Annotation) -> str:
    """The clip's collisions in a canonical order, from the annotation alone (not the question): each
    colliding pair as two object names joined by "-", the pairs sorted, "none" without a collision.
    An object is named by its colour where no other object of the scene has it, else by colour,
    material and shape.

    >>> a = Annotation({0: {"color": "red", "material": "rubber", "shape": "cube"},
    ...                 1: {"color": "blue", "material": "metal", "shape": "sphere"},
    ...                 2: {"color": "green", "material": "rubber", "shape": "cube"}},
    ...                {frozenset((0, 1)), frozenset((1, 2))})
    >>> describe_collisions(a)
    'Collisions: blue-green, blue-red.'
    """
    colours = [o["color"] for o in annotation.objects.values()]

    def name(i: int) -> str:
        o = annotation.objects[i]
        return o["color"] if colours.count(o["color"]) == 1 else f"{o['color']} {o['material']} {o['shape']}"

    pairs = sorted("-".join(sorted(name(i) for i in pair)) for pair in annotation.collisions)
    return f"Collisions: {', '.join(pairs) if pairs else 'none'}."


def read_collisions(text: str) -> frozenset[str] | None:
    """The pairs of the first "Collisions: ..." sentence of a completion (the `describe_collisions`
    format); None when the completion has none.

    >>> sorted(read_collisions("<think>Collisions: blue-red, green-red. Seen: A.</think>"))
    ['blue-red', 'green-red']
    >>> read_collisions("<think>Collisions: none. Seen: none.</think>")
    frozenset()
    """
    start = text.find("Collisions: ")
    if start < 0:
        return None
    body = text[start + len("Collisions: ") :].split(".", 1)[0]
    return frozenset() if body == "none" else frozenset(p.strip() for p in body.split(","))


def collisions_described(output: str, annotation: Annotation) -> bool:
    """Whether a completion describes the clip's collisions exactly (every pair, no other)."""
    said = read_collisions(output)
    return said is not None and said == read_collisions(describe_collisions(annotation))


def reasoning_target(record: Record, annotation: Annotation, describe: bool = False) -> str:
    """The warm-start completion of a counterfactual record: what the video shows, what happens without
    the removed object, and the answer (see the module docstring). With ``describe`` the thinking
    opens with `describe_collisions` (what the clip shows, in words, before the choices' letters)."""
    facts = choice_facts(record, annotation)
    opening = f"{describe_collisions(annotation)} " if describe else ""
    if record.question_kind == "seen":  # a perception probe: the answer is the "Seen" list
        return f"<think>{opening}Seen: {_letters(facts.seen)}.</think><answer>{record.solution}</answer>"
    return (
        f"<think>{opening}Seen: {_letters(facts.seen)}. Without it: {_letters(facts.happens)}.</think>"
        f"<answer>{record.solution}</answer>"
    )


def load_annotations(records: list[Record], annotations: str | Path) -> list[Annotation]:
    """The annotation of each record's scene, from the flat folder ``annotations``
    (``annotation_<scene_index:05d>.json``, the lab's layout)."""
    cache: dict[int, Annotation] = {}
    for record in records:
        index = int(record.extra["scene_index"])
        if index not in cache:
            cache[index] = Annotation.load(Path(annotations) / f"annotation_{index:05d}.json", index)
    return [cache[int(r.extra["scene_index"])] for r in records]


def reasoning_targets(records: list[Record], annotations: str | Path, describe: bool = False) -> list[str]:
    """`reasoning_target` of each record (annotations as `load_annotations` reads them)."""
    return [reasoning_target(r, a, describe) for r, a in zip(records, load_annotations(records, annotations))]


def completion_batch(processor, prompts: list[str], visuals: list, completions: list[str]):
    """Model inputs of prompt + completion sequences with labels on the completion tokens only.

    Each prompt is rendered as for sampling (`videothinker.models.inputs.build_inputs`, ending with the
    assistant turn's opening), then its completion and the end-of-turn token are appended, so the
    model learns to answer and to stop. Sequences are right padded.

    Returns:
        The BatchFeature of `build_inputs` with input_ids, attention_mask (and any other [B, P]
        tensor, e.g. mm_token_type_ids) extended to [B, L], and labels [B, L]: the token id where
        the token is part of a completion (or its end token), IGNORE_INDEX elsewhere.
    """
    from videothinker.models.inputs import build_inputs

    inputs = build_inputs(processor, prompts, visuals, padding_side="right")
    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    ids, mask = inputs["input_ids"], inputs["attention_mask"]  # [B, P]
    lengths = mask.sum(dim=1).tolist()
    tails = [tokenizer(c, add_special_tokens=False)["input_ids"] + [end] for c in completions]
    width = max(n + len(t) for n, t in zip(lengths, tails))
    B = ids.shape[0]
    new_ids = torch.full((B, width), pad, dtype=ids.dtype)
    new_mask = torch.zeros((B, width), dtype=mask.dtype)
    labels = torch.full((B, width), IGNORE_INDEX, dtype=torch.long)
    for row, (n, tail) in enumerate(zip(lengths, tails)):
        new_ids[row, :n] = ids[row, :n]
        new_ids[row, n : n + len(tail)] = torch.tensor(tail, dtype=ids.dtype)
        new_mask[row, : n + len(tail)] = 1
        labels[row, n : n + len(tail)] = torch.tensor(tail)
    for key, value in list(inputs.items()):  # other per-token tensors: extended with zeros
        if key not in ("input_ids", "attention_mask") and torch.is_tensor(value) and value.shape == ids.shape:
            grown = torch.zeros((B, width), dtype=value.dtype)
            grown[:, : value.shape[1]] = value
            inputs[key] = grown
    inputs["input_ids"], inputs["attention_mask"], inputs["labels"] = new_ids, new_mask, labels
    return inputs


def completion_loss(model, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (completion) tokens of a `completion_batch`."""
    labels = batch["labels"]  # [B, L]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits  # [B, L, V]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


@dataclass
class WarmStartConfig:
    """Settings of a warm start (the demo's presets choose them).

    Attributes:
        steps: optimizer steps.
        learning_rate: AdamW peak learning rate (linear warmup over 5% of steps, cosine decay to 10%).
        batch_size: records per step.
        seed: seed of the record order.
        template: training prompt template (`videothinker.data.prompts.train_prompt`), as RL uses.
        eval_prompt_share: share of examples asked with the evaluation prompt
            (`videothinker.data.prompts.eval_prompt`) instead, so that the model answers both in the
            RL format, as a pretrained model would.
        device: "auto" (cuda when visible), "cpu" or "cuda".
        bf16: bfloat16 autocast on CUDA.
        video: frame sampling (the same as the RL stages', so the model sees the same frames).
    """

    steps: int = 100
    learning_rate: float = 1e-3
    batch_size: int = 8
    seed: int = 0
    template: str = "mixed"
    eval_prompt_share: float = 0.5
    device: str = "auto"
    bf16: bool = False
    video: VideoConfig = field(default_factory=VideoConfig)


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, math.ceil(0.05 * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))


def warm_start(
    model_dir: str | Path,
    records: list[Record],
    targets: list[str],
    out_dir: str | Path,
    config: WarmStartConfig,
) -> Path:
    """Fine-tune the model of ``model_dir`` on (record prompt -> target completion) pairs and save it.

    Writes ``out_dir``/log.jsonl (one line per step: step, loss, lr) and the model in HF format at
    ``out_dir``/final (written under a temporary name, then renamed); returns that folder.
    """
    from videothinker.data.prompts import eval_prompt, train_prompt
    from videothinker.data.video import load_visual
    from videothinker.eval.generation import resolve_device
    from videothinker.models.loading import load_model, load_processor, processor_size_factor

    if len(records) != len(targets) or not records:
        raise ValueError(f"warm start needs one target per record, got {len(records)} and {len(targets)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    processor = load_processor(model_dir)
    model = load_model(model_dir, dtype="float32", device=device)
    size_factor = config.video.size_factor or processor_size_factor(processor)
    prompts = [(train_prompt(r, config.template), eval_prompt(r)) for r in records]
    frames: dict[str, object] = {}  # a few hundred small clips: decode each once

    def visual(record: Record):
        if record.video is None:
            return None
        if record.video not in frames:
            frames[record.video] = load_visual(
                record.video, record.data_type, config.video, size_factor, fps=record.extra.get("fps")
            )
        return frames[record.video]

    rng = random.Random(config.seed)
    order: list[int] = []

    def next_batch() -> tuple[list[str], list[Record], list[str]]:
        """The next records (shuffled epochs), each with its prompt template drawn."""
        nonlocal order
        while len(order) < config.batch_size:
            more = list(range(len(records)))
            rng.shuffle(more)
            order += more
        picked, order = order[: config.batch_size], order[config.batch_size :]
        return (
            [prompts[i][rng.random() < config.eval_prompt_share] for i in picked],
            [records[i] for i in picked],
            [targets[i] for i in picked],
        )

    def build(plan: tuple[list[str], list[Record], list[str]]):
        chosen_prompts, chosen, chosen_targets = plan
        return completion_batch(processor, chosen_prompts, [visual(r) for r in chosen], chosen_targets)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    log = (out_dir / LOG_FILE).open("w", encoding="utf-8")
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16 and device == "cuda")
    # The next batch is tokenised and patchified in a worker thread while this one trains.
    with progress() as bar, log, ThreadPoolExecutor(max_workers=1) as pool:
        task = bar.add_task("warm start", total=config.steps, info="")
        upcoming = pool.submit(build, next_batch())
        for step in range(config.steps):
            started = time.perf_counter()
            batch = upcoming.result().to(device)
            if step + 1 < config.steps:
                upcoming = pool.submit(build, next_batch())
            lr = config.learning_rate * _lr_factor(step, config.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                loss = completion_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            row = {
                "step": step + 1,
                "loss": float(loss.detach()),
                "lr": lr,
                "step_time": time.perf_counter() - started,
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.update(task, completed=step + 1, info=f"loss {row['loss']:.3f}")
    (out_dir / "warm_start.json").write_text(
        json.dumps({"model": str(model_dir), "records": len(records), **asdict(config)}, indent=2)
    )
    final, tmp = out_dir / "final", out_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    print0(f"warm start: {config.steps} steps, last loss {row['loss']:.3f}; model at {final}")
    return final
