"""The training loop of all three stages: bias-aware training, CDPO and the GRPO baseline.

One step: take B prompts, sample G completions each from a single prefill, score them with the reward
functions, turn rewards into group-normalised advantages, compute the reference model's log-probs (if
beta != 0), then the policy's, and take one optimizer step on the clipped surrogate with the signed,
clamped KL term (rl/losses.py). The stages differ only in data and reference:

- bias: observational questions, beta = 0, no reference model;
- cdpo: all questions, reference = the bias model, beta < 0 (repels);
- grpo: all questions, reference = the initial model, beta >= 0 (attracts; beta = 0 loads none).

The reference given is the reference used, in every setting; the first log lines say which it is.
With ``model.lora_r > 0`` the policy trains LoRA adapters on a frozen base, and a LoRA reference on
the same base (or, for grpo, the base itself) is computed by the policy's own model with its adapters
switched (models/lora.py): one base in memory. models/policy.py builds the policy and the reference,
however it is held; the loop only asks the reference for the model to run.

Several processes (torchrun, ``accelerate launch``) each take a slice of the global batch; with
``distributed.strategy = replicate`` each holds the whole policy, with ``fsdp`` parameters,
gradients and optimizer state are sharded (models/sharding.py). What they agree on in the loop
(samples, gradients, branches, logged metrics): rl/processes.py.

Why not TRL's GRPOTrainer: it has no video input and no way to set the reference model; the loop
here is short enough to read top to bottom.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videothinker.config import TrainConfig
from videothinker.console import print0, progress, warn
from videothinker.data.media import check_training_media, load_record_visual
from videothinker.data.records import Record
from videothinker.models import lora
from videothinker.models.engine import make_engine
from videothinker.models.sharding import device_mesh, full_state_dict, is_dtensor, root_forward
from videothinker.rl.checkpoint import (
    Processes,
    TrainerState,
    list_checkpoints,
    load_trainer_state,
    save_checkpoint,
)
from videothinker.rl.health import CollapseMonitor, degenerate_share
from videothinker.rl.logger import JsonlLogger
from videothinker.rl.losses import RepulsionController, aggregated_kl, group_advantages, policy_loss
from videothinker.rl.memory import peak_memory, reset_peak_memory
from videothinker.rl.optim import build_optimizer
from videothinker.rl.processes import Collectives, all_reduce_grads, sampling_seed
from videothinker.rl.prompt_inputs import prompt_inputs
from videothinker.rl.prompt_loader import PromptLoader
from videothinker.rl.rewards import compute_rewards
from videothinker.rl.sampler import PromptSampler
from videothinker.yaml_config import to_dict


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. several non-finite steps in a row); the CLI prints its message as one
    line, without a traceback."""

    user_facing = True


class CollapseError(TrainingError):
    """The run collapsed (rl/health.py): it stopped, and its last good checkpoint is kept."""


@dataclass
class StepOutput:
    """What one optimizer step reports."""

    metrics: dict[str, float]
    skipped: bool


def reference_description(config: TrainConfig, plan: lora.ReferencePlan | None = None) -> str:
    """The sentence the log opens with: which reference model the KL term uses, how it is held
    (`lora.plan_reference`), and the sign of beta."""
    beta = config.grpo.beta
    if beta == 0:
        return f"stage {config.stage}: beta = 0, no KL term, no reference model loaded"
    plan = plan or lora.plan_reference(config)
    role = {"cdpo": "the bias model", "grpo": "the initial model"}.get(config.stage, "the reference")
    held = f"({role})" if plan.kind == "model" else f"({plan.how()}), {role}"
    direction = "repels the policy from it (CDPO)" if beta < 0 else "attracts the policy to it"
    return f"stage {config.stage}: reference model = {plan.path} {held}; beta = {beta:g} {direction}"


def load_training_records(config: TrainConfig) -> list[Record]:
    """The stage's records: all of them, or only those of ``data.question_kind``; with
    ``data.video_shuffle``, each showing another scene's video (`shuffle_videos`).

    A file with no question_kind labels at all is taken whole for a kind filter (a file of only
    observational questions serves the bias stage), with a note saying so.
    """
    from videothinker.data.records import load_records_report

    data = config.data
    records, errors = load_records_report(data.path, data.video_root, skip_invalid=data.skip_invalid)
    if errors:
        warn(f"skipped {len(errors)} invalid records of {data.path} (first: {errors[0]})")
    kind = data.question_kind
    if kind is not None:
        if not any(r.question_kind is not None for r in records):
            print0(
                f"{data.path} carries no question_kind labels: all {len(records)} records are taken as {kind}"
            )
        else:
            records = [r for r in records if r.question_kind == kind]
    if not records:
        raise ValueError(f"no training records in {data.path}" + (f" of kind {kind}" if kind else ""))
    if data.video_shuffle:
        from videothinker.data.records import shuffle_videos

        records = shuffle_videos(records, config.grpo.seed)
        print0(f"data.video_shuffle: each of the {len(records)} records shows another scene's video")
    return records


@dataclass
class MicroBatch:
    """One micro-batch of B prompts with their G completions each, scored."""

    rollout: Any  # videothinker.rl.rollout.Rollout
    records: list[Record]
    advantages: torch.Tensor  # [B*G]
    rewards: dict[str, list[float]]  # reward name -> [B*G]
    total_reward: torch.Tensor  # [B*G]
    degenerate: float = 0.0  # share of degenerate completions (rl/health.py)


class Trainer:
    """GRPO / bias-aware training / CDPO on one or many processes (launched by accelerate or torchrun).

    Args:
        config: the resolved training config (`TrainConfig`).
        resume: "auto" (continue from the newest checkpoint in the output folder, if any), a checkpoint
            path, or None (start fresh; an output folder holding checkpoints is then an error).
    """

    def __init__(self, config: TrainConfig, resume: str | None = "auto"):
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        from videothinker.models.loading import eos_token_ids, load_processor
        from videothinker.models.policy import build_policy_and_reference

        self.config = cfg = config
        g = cfg.grpo
        # cpu=True off a GPU makes accelerate see a torchrun / accelerate launch as MULTI_CPU (gloo).
        self.accelerator = Accelerator(
            mixed_precision="bf16" if g.bf16 else "no", cpu=not torch.cuda.is_available()
        )
        self.device = self.accelerator.device
        self.collectives = Collectives(self.accelerator)
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        set_seed(g.seed)
        is_main = self.accelerator.is_main_process
        tb_dir = self.out / "tensorboard" if "tensorboard" in (g.report_to or []) else None
        self.logger = JsonlLogger(
            self.out / "log.jsonl", tb_dir, enabled=is_main, wandb="wandb" in (g.report_to or []), config=cfg
        )

        checkpoint = self._checkpoint_to_resume(resume)
        plan = lora.plan_reference(cfg)

        # data first (no model loads before the media check): the records, their media checked
        self.records = load_training_records(cfg)
        with self.accelerator.main_process_first():  # the main process probes, the others read its cache
            self.records, media = check_training_media(self.records, cfg)
        left_out = f"; {media.left_out()}" if media and media.bad else ""
        print0(reference_description(cfg, plan) + left_out, soft_wrap=True)
        self.sampler = PromptSampler(len(self.records), g.seed, cfg.data.shuffle)

        # models: the policy (sampled from and trained), its LoRA adapters (self.lora: the peft model
        # that switches, disables and saves them; None without LoRA) and the reference (None: beta = 0)
        self.processor = load_processor(cfg.model.path)
        self.sharded = cfg.distributed.strategy == "fsdp"
        mesh = device_mesh(self.device) if self.sharded else None
        self.policy, self.lora, self.ref = build_policy_and_reference(
            cfg, self.device, checkpoint, plan, mesh
        )
        self.init_ref = None  # the initial model: CDPO's anchor, or what kl_init measures against
        if cfg.cdpo.needs_initial_model:
            from videothinker.models.policy import build_initial_reference

            self.init_ref = build_initial_reference(cfg, self.device, self.policy, self.lora, mesh)
            print0(f"initial model {cfg.model.path}: " + _anchor_description(cfg))
        self.controller = (
            RepulsionController(
                g.beta,
                cfg.cdpo.kl_target,
                warmup=cfg.cdpo.kl_target_warmup,
                rate=cfg.cdpo.kl_target_rate,
                beta_max=cfg.cdpo.beta_max,
            )
            if cfg.cdpo.kl_target is not None
            else None
        )
        self.monitor = CollapseMonitor(cfg.collapse)
        self.engine = make_engine(self.policy, cfg.rollout, torch.bfloat16 if g.bf16 else None)
        self.eos_ids = eos_token_ids(self.policy, self.processor)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.prompts = self._prompt_loader()  # decodes the next prompts' media while a step trains

        # optimisation
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(  # warns if half-precision weights would lose small updates
            self.params,
            g.optim,
            lr=g.learning_rate,
            betas=(g.adam_beta1, g.adam_beta2),
            weight_decay=g.weight_decay,
            device=self.device,
        )
        self.scheduler = get_scheduler(
            g.lr_scheduler_type,
            self.optimizer,
            num_warmup_steps=math.ceil(g.warmup_ratio * g.max_steps),
            num_training_steps=g.max_steps,
        )
        self.state = TrainerState(step=0, sampler=self.sampler.state_dict())
        if checkpoint is not None:
            self.state = load_trainer_state(checkpoint, self.optimizer, self.scheduler, self._processes())
            self.sampler.load_state_dict(self.state.sampler)
            extra = self.state.extra or {}
            self.prompts.load_state_dict(extra.get("media", {}))
            self.monitor.load_state_dict(extra.get("collapse", {}))
            if self.controller is not None and "controller" in extra:
                self.controller.load_state_dict(extra["controller"])
            self.logger.truncate_after(self.state.step)
            print0(f"resumed from {checkpoint} at step {self.state.step}")
        else:
            self.logger.log(
                {
                    "event": "start",
                    "reference": reference_description(cfg, plan),
                    "engine": self.engine.memory_report() if self.engine is not None else "generate",
                    "skipped_media": media and media.to_row(),
                    "config": to_dict(cfg),
                }
            )

    @property
    def reference(self) -> torch.nn.Module | None:
        """The reference's second, frozen model; None when there is no reference or it is the
        policy's own model with its adapters switched (the loop uses `self.ref` either way)."""
        return None if self.ref is None else self.ref.separate

    def _checkpoint_to_resume(self, resume: str | None) -> Path | None:
        existing = list_checkpoints(self.out)
        if resume == "auto":
            return existing[-1] if existing else None
        if resume is None:
            if existing:
                raise ValueError(
                    f"{self.out} already holds checkpoints ({existing[-1].name}); resume (the default) or choose "
                    "another output folder"
                )
            return None
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint to resume not found: {path}")
        return path

    # ----------------------------------------------------------------------------------------- data
    def _prompt_loader(self) -> PromptLoader:
        """Micro-batches of this process's prompts with their media decoded ahead, bad media skipped."""
        from videothinker.models.loading import processor_size_factor

        cfg, acc = self.config, self.accelerator
        size_factor = cfg.video.size_factor or processor_size_factor(self.processor)
        return PromptLoader(
            self.records,
            self.sampler,
            lambda record: load_record_visual(record, cfg.video, size_factor),
            cfg.grpo.per_device_train_batch_size,
            workers=cfg.data.decode_workers,
            max_failures=cfg.data.max_decode_failures,
            num_processes=acc.num_processes,
            process_index=acc.process_index,
            gather=self.collectives.gather,
        )

    def _prompt_inputs(self, records: list[Record], visuals: list | None = None):
        """Model inputs of B prompts (left padded), each within max_prompt_length (data.prompt_truncation);
        ``visuals`` are the records' loaded media (default: loaded here)."""
        from videothinker.models.loading import processor_size_factor

        cfg = self.config
        if visuals is None:
            size_factor = cfg.video.size_factor or processor_size_factor(self.processor)
            visuals = [load_record_visual(r, cfg.video, size_factor) for r in records]
        return prompt_inputs(
            self.processor,
            records,
            visuals,
            cfg.data.template,
            cfg.grpo.max_prompt_length,
            cfg.data.prompt_truncation,
        )

    def _micro_batch(self) -> MicroBatch:
        """Sample B prompts, G completions each from one prefill, and score them."""
        from videothinker.rl.rollout import generate_rollout

        g = self.config.grpo
        acc = self.accelerator
        # Every process draws the same global batch and keeps its own slice, so groups stay whole.
        position = self.sampler.consumed + acc.process_index  # this process's first prompt
        records, visuals = self.prompts.next_batch()
        torch.manual_seed(sampling_seed(g.seed, position))
        inputs = self._prompt_inputs(records, visuals).to(self.device)
        self.policy.eval()
        with torch.no_grad(), acc.autocast():
            rollout = generate_rollout(
                self.policy,
                inputs,
                g.num_generations,
                max_completion_length=g.max_completion_length,
                temperature=g.temperature,
                top_p=g.top_p,
                eos_token_ids=self.eos_ids,
                pad_token_id=self.pad_id,
                engine=self.engine,
            )
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        lengths = rollout.completion_mask.sum(dim=1).tolist()
        completions = [
            tokenizer.decode(ids[: int(n)], skip_special_tokens=True)
            for ids, n in zip(rollout.completion_ids.tolist(), lengths)
        ]
        G = g.num_generations
        repeat = [r for r in records for _ in range(G)]
        rewards = compute_rewards(
            g.reward_funcs,
            completions,
            [r.solution for r in repeat],
            problem_type=[r.problem_type for r in repeat],
            question_kind=[r.question_kind for r in repeat],
        )
        weights = g.reward_weights or [1.0] * len(g.reward_funcs)
        total = sum(w * torch.tensor(rewards[name]) for w, name in zip(weights, g.reward_funcs))
        advantages = group_advantages(total, G, scale_rewards=g.scale_rewards)
        ids = [row[: int(n)] for row, n in zip(rollout.completion_ids.tolist(), lengths)]
        degenerate = degenerate_share(completions, ids)
        if g.num_iterations > 1:  # the ratio's denominator: the sampling policy, frozen for the iterations
            rollout.old_logprobs = self._logprobs(self.policy, rollout, grad=False)
        if self.ref is not None:
            with self.ref.active() as reference:
                rollout.ref_logprobs = self._logprobs(reference, rollout, grad=False)
        if self.init_ref is not None:
            with self.init_ref.active() as initial:
                rollout.init_logprobs = self._logprobs(initial, rollout, grad=False)
        return MicroBatch(rollout, records, advantages.to(self.device), rewards, total, degenerate)

    def _logprobs(self, model, rollout, grad: bool, entropy: bool = False):
        """Log-probs of the rollout's completions (a sharded model's root gathered around the call);
        with ``entropy``, also the per-token entropies."""
        from videothinker.rl.logprobs import rollout_logprobs

        temperature = self.config.grpo.temperature
        with self.accelerator.autocast(), torch.set_grad_enabled(grad):
            return root_forward(
                model,
                lambda: rollout_logprobs(model, rollout, temperature=temperature, grad=grad, entropy=entropy),
            )

    @property
    def beta(self) -> float:
        """This step's KL coefficient: grpo.beta, or the controller's (cdpo.kl_target)."""
        return self.controller.beta if self.controller is not None else self.config.grpo.beta

    def _health_metrics(
        self, logprobs: torch.Tensor, entropy: torch.Tensor, rollout
    ) -> dict[str, torch.Tensor]:
        """The policy's mean token entropy, and the KL to the bias model (cdpo) and to the initial model
        (where its log-probs are at hand), aggregated as the loss's ``kl`` (rl/health.py)."""
        mask = rollout.completion_mask.to(entropy.dtype)  # [N, T]
        out = {"entropy": (entropy * mask).sum() / mask.sum().clamp(min=1.0)}
        g = self.config.grpo
        kw = {
            "kl_clamp": g.kl_clamp,
            "loss_type": g.loss_type,
            "max_completion_length": g.max_completion_length,
        }
        stage = self.config.stage
        if rollout.ref_logprobs is not None and stage in ("cdpo", "grpo"):
            name = "kl_bias" if stage == "cdpo" else "kl_init"
            out[name] = aggregated_kl(logprobs, rollout.ref_logprobs, rollout.completion_mask, **kw)
        if rollout.init_logprobs is not None:
            out["kl_init"] = aggregated_kl(logprobs, rollout.init_logprobs, rollout.completion_mask, **kw)
        return out

    def _processes(self) -> Processes:
        acc = self.accelerator
        return Processes(acc.process_index, acc.num_processes, acc.wait_for_everyone, self.sharded)

    # ----------------------------------------------------------------------------------------- step
    def _optimizer_step(self, batches: list[MicroBatch]) -> StepOutput:
        """One optimizer step over the micro-batches (gradient accumulation), with the non-finite guard."""
        g = self.config.grpo
        self.policy.train()
        sums: dict[str, float] = {}
        finite = True
        for mb in batches:
            r = mb.rollout
            logprobs, entropy = self._logprobs(self.policy, r, grad=True, entropy=True)
            old = r.old_logprobs if r.old_logprobs is not None else logprobs.detach()
            c = self.config.cdpo
            loss, metrics = policy_loss(
                logprobs,
                old,
                mb.advantages,
                r.completion_mask,
                ref_logprobs=r.ref_logprobs,
                beta=self.beta,
                epsilon_low=g.epsilon,
                epsilon_high=g.epsilon_high,
                kl_clamp=g.kl_clamp,
                loss_type=g.loss_type,
                max_completion_length=g.max_completion_length,
                kl_cap=c.kl_cap,
                one_sided=c.one_sided,
                anchor_logprobs=r.init_logprobs if c.anchor_beta > 0 else None,
                anchor_beta=c.anchor_beta,
            )
            metrics.update(self._health_metrics(logprobs.detach(), entropy, r))
            if not self.collectives.everywhere(bool(torch.isfinite(loss))):  # all skip, or none
                finite = False
                break
            self.accelerator.backward(loss / len(batches))
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / len(batches)
        sums = self.collectives.mean(sums)
        grad_norm = float("nan")
        if finite:
            if not self.sharded:  # FSDP reduce-scatters gradients in backward
                all_reduce_grads(self.params, self.accelerator.num_processes)
            norm = torch.nn.utils.clip_grad_norm_(self.params, g.max_grad_norm)
            grad_norm = float(norm.full_tensor() if is_dtensor(norm) else norm)  # the same on every process
            finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            if self.engine is not None:  # the engine's low-precision copy of the weights follows them
                self.engine.refresh_weights()
            self.state.nonfinite_in_a_row = 0
        else:
            self.state.nonfinite_in_a_row += 1
            warn(
                f"step {self.state.step + 1}: non-finite {'loss' if not sums else 'gradient'}; step skipped "
                f"({self.state.nonfinite_in_a_row} in a row)"
            )
            if self.state.nonfinite_in_a_row >= g.max_nonfinite_steps:
                raise TrainingError(
                    f"{self.state.nonfinite_in_a_row} non-finite steps in a row: stopping. Lower the learning rate, "
                    "check the data, or (CDPO) make beta smaller in magnitude or kl_clamp smaller"
                )
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        sums["grad_norm"] = grad_norm
        return StepOutput(sums, skipped=not finite)

    def _rollout_metrics(self, batches: list[MicroBatch]) -> dict[str, float]:
        """Reward per function and per question_kind, completion length, over the step's completions
        on every process (gathered in process order: the global batch's)."""
        g = self.config.grpo
        G = g.num_generations
        local = {
            "total": [float(v) for mb in batches for v in mb.total_reward],
            "kinds": [r.question_kind for mb in batches for r in mb.records for _ in range(G)],
            "lengths": [float(n) for mb in batches for n in mb.rollout.completion_mask.sum(dim=1).tolist()],
            "degenerate": [mb.degenerate for mb in batches],
            **{name: [v for mb in batches for v in mb.rewards[name]] for name in g.reward_funcs},
        }
        parts = self.collectives.gather(local)
        column = {key: [v for part in parts for v in part[key]] for key in local}
        out: dict[str, float] = {}
        total = torch.tensor(column["total"])
        out["reward"] = float(total.mean())
        out["reward_std"] = float(total.std()) if total.numel() > 1 else 0.0
        for name in g.reward_funcs:
            out[f"reward/{name}"] = float(sum(column[name]) / total.numel())
        kinds = column["kinds"]
        for kind in sorted({k for k in kinds if k is not None}):
            mask = torch.tensor([k == kind for k in kinds])
            out[f"reward/{kind}"] = float(total[mask].mean())
            if "accuracy" in column:
                out[f"accuracy/{kind}"] = float(torch.tensor(column["accuracy"])[mask].mean())
        lengths = torch.tensor(column["lengths"])
        out["completion_length"] = float(lengths.mean())
        out["completion_tokens"] = float(lengths.sum())
        out["degenerate"] = sum(column["degenerate"]) / max(len(column["degenerate"]), 1)
        return out

    # ----------------------------------------------------------------------------------------- loop
    def train(self) -> Path:
        """Run to max_steps (from where a resumed run stopped); return the final model's folder."""
        g = self.config.grpo
        acc_steps = g.gradient_accumulation_steps
        with progress() as bar:
            task = bar.add_task(f"{self.config.stage}", total=g.max_steps, completed=self.state.step, info="")
            batches: list[MicroBatch] = []
            while self.state.step < g.max_steps:
                reset_peak_memory(self.device)
                started = time.perf_counter()
                if self.state.step % g.num_iterations == 0 or not batches:
                    batches = [self._micro_batch() for _ in range(acc_steps)]
                    self.state.sampler = self.sampler.state_dict()
                result = self._optimizer_step(batches)
                self.state.step += 1
                step_time = time.perf_counter() - started
                row = {"step": self.state.step, **result.metrics, **self._rollout_metrics(batches)}
                row.update(
                    lr=float(self.scheduler.get_last_lr()[0]),  # a tensor for torchao's optimizers
                    step_time=step_time,
                    skipped=result.skipped,
                    tokens_per_s=row["completion_tokens"] / step_time,
                    epoch=self.sampler.epoch,
                    **self.collectives.max(peak_memory(self.device)),  # the fullest device's
                    decode_failures=self.prompts.failures,
                )
                if self.controller is not None:
                    row["beta"] = self.beta  # the beta this step used
                    if "kl" in row:
                        self.controller.update(row["kl"])
                collapse = self.monitor.update(row)
                if self.state.step % g.logging_steps == 0 or self.state.step == g.max_steps or collapse:
                    self.logger.log(row)
                if collapse:
                    self._stop_collapsed(collapse)
                info = f"loss {row['loss']:.4f} reward {row['reward']:.3f}" if "loss" in row else "skipped"
                if "peak_reserved_gib" in row:
                    info += f" peak {row['peak_reserved_gib']:.1f} GiB"
                bar.update(task, completed=self.state.step, info=info)
                if self.state.step % g.save_steps == 0 or self.state.step == g.max_steps:
                    self.save()
        self.prompts.close()
        final = self.save_final()
        self.logger.close()
        return final

    def _stop_collapsed(self, reason: str) -> None:
        """Stop a collapsed run with one clear line: the step, the rule, the likely cause, the last good
        checkpoint (saved before the collapse window began; kept, nothing is saved now) and how to go on."""
        step, window = self.state.step, self.config.collapse.window
        good = [c for c in list_checkpoints(self.out) if int(c.name.split("-")[-1]) <= step - window]
        kept = (
            f"its last good checkpoint {good[-1]} is kept" if good else "no checkpoint precedes the collapse"
        )
        cfg = self.config
        if cfg.stage == "cdpo":
            cause = f"the repulsion from the bias model is too strong (beta {self.beta:g})"
            fix = (
                f"resume {'it' if good else 'from the start'} with a smaller |grpo.beta| (e.g. --set "
                f"grpo.beta={self.beta / 3:.3g}{f' --resume {good[-1]}' if good else ''}) or bound it "
                "(--set cdpo.kl_cap=0.2, docs/LOSS.md)"
            )
        else:
            cause = f"the updates are too large (learning rate {cfg.grpo.learning_rate:g})"
            fix = "go on with a smaller grpo.learning_rate"
        self.prompts.close()
        self.logger.log(
            {
                "event": "collapse",
                "step": step,
                "reason": reason,
                "checkpoint": str(good[-1]) if good else None,
            }
        )
        self.logger.close()
        raise CollapseError(
            f"step {step}: training collapsed ({reason}); likely cause: {cause}; {kept}; {fix}"
        )

    def save(self) -> Path:
        """Write checkpoint-<step> (every process takes part: its optimizer shard and RNG states)."""
        self.state.sampler = self.sampler.state_dict()
        self.state.extra = {
            **(self.state.extra or {}),
            "media": self.prompts.state_dict(),
            "collapse": self.monitor.state_dict(),
        }
        if self.controller is not None:
            self.state.extra["controller"] = self.controller.state_dict()
        return save_checkpoint(
            self.out,
            model=self.policy,
            save_model=lambda _, folder: self._save_weights(folder),
            processor=self.processor,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=self.state,
            keep_last=self.config.grpo.save_total_limit,
            processes=self._processes(),
        )

    def _save_weights(self, folder: Path) -> None:
        """The policy in HF format, or its LoRA adapter (adapter_config.json + adapter_model.safetensors),
        written by the main process; every process calls it (a sharded policy is gathered to rank 0)."""
        main = self.accelerator.is_main_process
        if self.lora is not None:
            if main:
                lora.save_adapter(self.lora, folder)
            return
        state = full_state_dict(self.policy) if self.sharded else None
        if main:
            self.accelerator.unwrap_model(self.policy).save_pretrained(
                folder, state_dict=state, safe_serialization=True
            )

    def save_final(self) -> Path:
        """The trained model in HF format at OUTPUT/final (what `eval --model` and `--reference` take);
        for a LoRA run, its adapter (a `--reference` on the same base)."""
        import shutil

        final, tmp = self.out / "final", self.out / ".final.tmp"
        main = self.accelerator.is_main_process
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        self._save_weights(tmp)
        if main:
            self.processor.save_pretrained(tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            print0(f"final model: {final}")
        self.accelerator.wait_for_everyone()
        return final


def _anchor_description(config: TrainConfig) -> str:
    c = config.cdpo
    if c.anchor_beta > 0:
        return f"anchor, an attracting KL term with coefficient {c.anchor_beta:g} beside the repulsion"
    return "its log-probs measure kl_init only (cdpo.track_init_kl)"


def train(config: TrainConfig, resume: str | None = "auto") -> Path:
    """Train one stage as the config says; return the folder of the final model."""
    return Trainer(config, resume=resume).train()
