"""Warm start: a short supervised fine-tuning that gives a tiny random-init model partial competence.

The paper starts RL from a pretrained model that already reasons a little (Qwen2.5-VL-3B: 73.9% on
CLEVRER's inferential questions zero-shot). A tiny model built by `videothinker.models.tiny` knows
nothing, so the demo first teaches it, briefly, on lab questions of both kinds, in the RL answer
format. This stand-in for pretraining is plain teacher forcing: next-token cross-entropy on the
completion tokens only (the prompt, video tokens included, is context, not target). What it teaches
(answers with a chain of thought, descriptions of the clip, collision labels) is `videothinker.lab.targets`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from videothinker.config import VideoConfig
from videothinker.console import print0, progress
from videothinker.data.records import Record
from videothinker.lab.targets import COLOR_PAIRS

IGNORE_INDEX = -100
LOG_FILE = "log.jsonl"


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
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "collision_colors")}
    logits = model(**inputs).logits  # [B, L, V]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


class PerceptionHead(torch.nn.Module):
    """A probe on the video tokens the language model reads, for the warm start's perception loss.

    Each merged video token (the vision tower's output, in the language model's width) scores every
    colour pair of `COLOR_PAIRS`; a video's score for a pair is its best token's (max pooling: "some
    token shows this pair's contact"). Trained with binary cross-entropy against `collision_colors`,
    it pushes the vision tower to encode, token by token, which objects touched, so that the language
    model has something local to read. The head is not part of the saved model.

    It reads the video tokens through a forward hook on the vision tower, so the loss costs no extra
    forward pass.
    """

    def __init__(self, model, width: int):
        super().__init__()
        self.score = torch.nn.Linear(width, len(COLOR_PAIRS))
        visual = model.model.visual
        self.merge = visual.spatial_merge_size
        self.tokens: torch.Tensor | None = None  # [num_video_tokens, width], the last forward's
        visual.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.tokens = output.pooler_output

    def loss(self, grid_thw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy of the last forward's videos (``grid_thw`` [B, 3]) against
        ``targets`` [B, len(COLOR_PAIRS)]."""
        sizes = (grid_thw.prod(-1) // self.merge**2).tolist()
        scores = torch.stack([s.max(dim=0).values for s in self.score(self.tokens).split(sizes)])  # [B, P]
        return torch.nn.functional.binary_cross_entropy_with_logits(scores.float(), targets.float())


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
        perception_weight: weight of the perception loss (`PerceptionHead`) added to the completion
            loss; 0 turns it off. It needs each record's `collision_colors`.
        perception_steps: steps that train the vision tower alone on the perception loss before the
            ``steps`` of the warm start (each phase with its own warmup and decay); needs
            ``perception_weight`` > 0.
        workers: processes that build the batches (tokenise, patchify) ahead of the step (None: 2
            on a GPU machine, `batch_workers`); 0: this process builds each in turn. Batches are
            planned here from ``seed`` and only built there, so the training is the same for any
            count. A batch of 32 lab clips takes about 0.15 s of one core to build (mostly the video
            processor's patchify); on one H200 the workers left the step time where a prefetching
            thread had it (0.20 vs 0.21 s beside another run), so the step is bound elsewhere.
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
    perception_weight: float = 0.0
    perception_steps: int = 0
    workers: int | None = None


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, math.ceil(0.05 * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))


def plan_batches(
    records: list[Record], config: WarmStartConfig, steps: int
) -> list[tuple[list[int], list[bool]]]:
    """The records of each of ``steps`` batches (shuffled epochs, seeded by ``config.seed``), each with
    its prompt drawn: True asks it with the evaluation prompt (share ``config.eval_prompt_share``)."""
    rng = random.Random(config.seed)
    order: list[int] = []
    plans = []
    for _ in range(steps):
        while len(order) < config.batch_size:
            more = list(range(len(records)))
            rng.shuffle(more)
            order += more
        picked, order = order[: config.batch_size], order[config.batch_size :]
        plans.append((picked, [rng.random() < config.eval_prompt_share for _ in picked]))
    return plans


def batch_workers(workers: int | None, device: str) -> int:
    """Processes that build a warm start's batches: ``workers``, or (None) 2 on a GPU with 4 or more
    cores, else 0 (on a CPU the cores are the step's: a worker would take them from it).

    >>> batch_workers(None, "cpu"), batch_workers(3, "cpu")
    (0, 3)
    """
    if workers is not None:
        if workers < 0:
            raise ValueError(f"warm start workers must be >= 0, got {workers}")
        return workers
    return 2 if device == "cuda" and (os.cpu_count() or 1) >= 4 else 0


class WarmStartBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a warm start: the `completion_batch` of plan ``i`` (`plan_batches`), with the
    records' perception targets (``collision_colors``) when given. Each video is decoded once per
    process. It holds plain data, so DataLoader worker processes can build the batches."""

    def __init__(
        self, processor, records, targets, plans, config: WarmStartConfig, size_factor: int, perception=None
    ):
        from videothinker.data.prompts import eval_prompt, train_prompt

        self.processor, self.records, self.targets, self.plans = processor, records, targets, plans
        self.video, self.size_factor, self.perception = config.video, size_factor, perception
        self.prompts = [(train_prompt(r, config.template), eval_prompt(r)) for r in records]
        self.frames: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.plans)

    def visual(self, record: Record):
        from videothinker.data.video import load_visual

        if record.video is None:
            return None
        if record.video not in self.frames:
            self.frames[record.video] = load_visual(
                record.video, record.data_type, self.video, self.size_factor, fps=record.extra.get("fps")
            )
        return self.frames[record.video]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        picked, as_eval = self.plans[index]
        batch = completion_batch(
            self.processor,
            [self.prompts[i][e] for i, e in zip(picked, as_eval)],
            [self.visual(self.records[i]) for i in picked],
            [self.targets[i] for i in picked],
        )
        out = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        if self.perception is not None:
            out["collision_colors"] = torch.tensor([self.perception[i] for i in picked])
        return out


def warm_start(
    model_dir: str | Path,
    records: list[Record],
    targets: list[str],
    out_dir: str | Path,
    config: WarmStartConfig,
    perception: list[list[float]] | None = None,
) -> Path:
    """Fine-tune the model of ``model_dir`` on (record prompt -> target completion) pairs and save it.

    ``perception`` holds each record's `collision_colors`, the targets of the perception loss (needed
    when ``config.perception_weight`` > 0; every record must then have a video).

    Writes ``out_dir``/log.jsonl (one line per step: step, loss, lr; with the perception loss also
    completion_loss and perception_loss) and the model in HF format at ``out_dir``/final (written under
    a temporary name, then renamed); returns that folder.
    """
    from videothinker.eval.generation import resolve_device
    from videothinker.models.loading import load_model, load_processor, processor_size_factor

    if len(records) != len(targets) or not records:
        raise ValueError(f"warm start needs one target per record, got {len(records)} and {len(targets)}")
    if config.perception_steps and not config.perception_weight > 0:
        raise ValueError("perception_steps need a perception loss (perception_weight > 0)")
    if config.perception_weight > 0 and (
        perception is None or len(perception) != len(records) or any(r.video is None for r in records)
    ):
        raise ValueError("the perception loss needs a video and collision_colors for every record")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    processor = load_processor(model_dir)
    total = config.perception_steps + config.steps
    batches = WarmStartBatches(
        processor,
        records,
        targets,
        plan_batches(records, config, total),
        config,
        config.video.size_factor or processor_size_factor(processor),
        perception if config.perception_weight > 0 else None,
    )
    workers = batch_workers(config.workers, device)
    if workers:  # the workers tokenise one batch each; the tokenizer's own threads would fight them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The workers start before the model reaches the GPU; each builds whole batches, in order.
    loader = iter(
        torch.utils.data.DataLoader(
            batches,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
            pin_memory=device == "cuda",
        )
    )
    model = load_model(model_dir, dtype="float32", device=device)
    head = None
    parameters = list(model.parameters())
    if config.perception_weight > 0:
        head = PerceptionHead(model, model.get_input_embeddings().embedding_dim).to(device)
        parameters += list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    log = (out_dir / LOG_FILE).open("w", encoding="utf-8")
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16 and device == "cuda")
    with progress() as bar, log:
        task = bar.add_task("warm start", total=total, info="")
        for step in range(total):
            started = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
            # First the vision tower alone on the perception loss, then the whole model.
            vision_only = step < config.perception_steps
            phase_step, phase_steps = (
                (step, config.perception_steps)
                if vision_only
                else (step - config.perception_steps, config.steps)
            )
            lr = config.learning_rate * _lr_factor(phase_step, phase_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            extra = {}
            with autocast:
                if vision_only:
                    model.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
                    loss = head.loss(batch["video_grid_thw"], batch["collision_colors"])
                    extra = {"phase": "perception"}
                else:
                    loss = completion_loss(model, batch)
                    if head is not None:
                        seen = head.loss(batch["video_grid_thw"], batch["collision_colors"])
                        extra = {
                            "completion_loss": float(loss.detach()),
                            "perception_loss": float(seen.detach()),
                        }
                        loss = loss + config.perception_weight * seen
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            row = {
                "step": step + 1,
                "loss": float(loss.detach()),
                "lr": lr,
                **extra,
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
