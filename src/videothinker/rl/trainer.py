"""The training loop of all three stages: bias-aware training, CDPO and the GRPO baseline.

One step: take B prompts, sample G completions each from a single prefill, score them with the reward
functions, turn rewards into group-normalised advantages, compute the reference model's log-probs (if
beta != 0), then the policy's, and take one optimizer step on the clipped surrogate with the signed,
clamped KL term (rl/losses.py). The stages differ only in data and reference:

- bias: observational questions, beta = 0, no reference model;
- cdpo: all questions, reference = the bias model, beta < 0 (repels);
- grpo: all questions, reference = the initial model, beta >= 0 (attracts; beta = 0 loads none).

CDPO's repulsion can be bounded (``cdpo.*``: a per-token cap, one-sided, an anchor to the initial model
loaded as a third model, a controller that adapts beta; docs/LOSS.md), and every stage watches its
health (rl/health.py): a run whose format reward, entropy or share of degenerate completions collapses
stops with one line and keeps its last good checkpoint.

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
    checkpoint_to_resume,
    list_checkpoints,
    load_trainer_state,
    save_checkpoint,
)
from videothinker.rl.health import CollapseMonitor, collapse_message, degenerate_share
from videothinker.rl.logger import JsonlLogger
from videothinker.rl.losses import RepulsionController, group_advantages, policy_loss
from videothinker.rl.memory import peak_memory, reset_peak_memory
from videothinker.rl.optim import build_optimizer
from videothinker.rl.processes import Collectives, all_reduce_grads, sampling_seed
from videothinker.rl.prompt_inputs import prompt_inputs
from videothinker.rl.prompt_loader import PromptLoader
from videothinker.rl.rewards import compute_rewards
from videothinker.rl.run_setup import anchor_description, load_training_records, reference_description
from videothinker.rl.sampler import PromptSampler
from videothinker.rl.step_metrics import health_metrics, rollout_metrics
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

        checkpoint = checkpoint_to_resume(self.out, resume)
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
            print0(f"initial model {cfg.model.path}: " + anchor_description(cfg))
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
        from videothinker.rl.shared_prompt import rollout_logprobs

        g = self.config.grpo
        kwargs = {
            "temperature": g.temperature,
            "grad": grad,
            "entropy": entropy,
            "share_prompt": g.share_prompt,
        }
        with self.accelerator.autocast(), torch.set_grad_enabled(grad):
            return root_forward(model, lambda: rollout_logprobs(model, rollout, **kwargs))

    @property
    def beta(self) -> float:
        """This step's KL coefficient: grpo.beta, or the controller's (cdpo.kl_target)."""
        return self.controller.beta if self.controller is not None else self.config.grpo.beta

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
                shape=c.shape,
                anchor_logprobs=r.init_logprobs if c.anchor_beta > 0 else None,
                anchor_beta=c.anchor_beta,
            )
            metrics.update(health_metrics(logprobs.detach(), entropy, r, self.config, metrics))
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
        g = self.config.grpo
        return rollout_metrics(batches, g.reward_funcs, g.num_generations, self.collectives.gather)

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
        """Stop a collapsed run with one clear line (`collapse_message`); nothing is saved now."""
        cfg = self.config
        message, good = collapse_message(
            reason, self.state.step, cfg.collapse.window, list_checkpoints(self.out), cfg.stage, self.beta,
            cfg.grpo.learning_rate,
        )  # fmt: skip
        self.prompts.close()
        self.logger.log({"event": "collapse", "step": self.state.step, "reason": reason, "checkpoint": good})
        self.logger.close()
        raise CollapseError(message)

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


def train(config: TrainConfig, resume: str | None = "auto") -> Path:
    """Train one stage as the config says; return the folder of the final model."""
    return Trainer(config, resume=resume).train()
