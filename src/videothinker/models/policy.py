"""The models of a training run: the policy, its LoRA adapters, and the reference model of the KL term.

`build_policy_and_reference` reads the config and returns the policy (the model sampled from and
trained), the peft model owning its adapters (None for full fine-tuning) and a `Reference` (None
when beta = 0). The reference is planned first (`lora.plan_reference`, from the files alone) and then
held in one of four ways: a second frozen model, a LoRA adapter merged into its base as a second
model, a LoRA adapter on the policy's own base, or that base with the adapters off. The trainer does
not ask which: ``with reference.active() as model`` gives the model whose log-probs are the
reference's, whichever way it is held.

With ``distributed.strategy = fsdp`` (a ``mesh`` given) the policy is loaded on the CPU and sharded
over the processes (models/sharding.py; each unit moves to the GPU as it is sharded), computing in
bf16 from fp32 master shards under ``grpo.bf16``; a separate reference model is sharded the same way
(``distributed.reference = shard``) or loaded whole on every device (``replicate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videothinker.adapters import is_adapter
from videothinker.console import warn
from videothinker.models import lora
from videothinker.models.loading import (
    enable_activation_checkpointing,
    limit_activation_checkpointing,
    load_merged_adapter,
    load_model,
)
from videothinker.models.sharding import shard_model

if TYPE_CHECKING:
    import torch

    from videothinker.config import TrainConfig


class Reference:
    """The reference model of the KL term, however it is held (``plan.kind``, models/lora.py).

    Args:
        plan: the run's `lora.ReferencePlan`.
        separate: the second, frozen model (kinds model and merged_adapter); None when the reference
            is the policy's own model with its adapters switched (policy_adapter, policy_base).
        policy: the policy's model (used by the in-policy kinds).
        lora_model: the policy's peft model (used by the in-policy kinds).
    """

    def __init__(self, plan: lora.ReferencePlan, separate=None, policy=None, lora_model=None):
        self.plan, self.separate, self._policy, self._lora = plan, separate, policy, lora_model

    @contextlib.contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """Inside: the model that computes the reference's log-probs. For an in-policy reference it is
        the policy's own model with the reference adapter active (or every adapter off); on exit the
        policy is as it was (`lora.reference_view`)."""
        if self.separate is not None:
            yield self.separate
            return
        with lora.reference_view(self._lora, self.plan.adapter):
            yield self._policy


def _visual_module(model) -> torch.nn.Module | None:
    inner = getattr(model, "model", model)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


def build_policy_and_reference(
    config: TrainConfig,
    device,
    checkpoint: Path | None = None,
    plan: lora.ReferencePlan | None = None,
    mesh=None,
) -> tuple[Any, Any, Reference | None]:
    """Load the policy (LoRA adapters injected if ``model.lora_r``) and its reference.

    Args:
        config: the resolved training config (model, grpo.bf16 and learning_rate, reference).
        device: where the weights go (the accelerator's device).
        checkpoint: resume: the policy's weights (a full model) or adapter (LoRA) come from here.
        plan: the run's reference plan (default: `lora.plan_reference(config)`).
        mesh: shard the policy (and, with ``distributed.reference = shard``, a separate reference)
            over this device mesh with FSDP2; None: whole models on ``device``.

    Returns:
        (policy, lora_model, reference): the model sampled from and trained; the peft model that
        injected its adapters into it and switches, disables and saves them (None without LoRA); the
        `Reference` (None when beta = 0 loads none).
    """
    m, g = config.model, config.grpo
    plan = plan or lora.plan_reference(config)
    if checkpoint is not None and is_adapter(checkpoint) and not m.lora_r:
        raise ValueError(f"{checkpoint} holds a LoRA adapter: resume it with the run's model.lora_r")
    policy = load_model(
        m.path if m.lora_r else checkpoint or m.path,
        dtype=m.dtype,
        attn_implementation=m.attn_implementation,
        trust_remote_code=m.trust_remote_code,
        device=device if mesh is None else None,  # sharded: from the CPU, a unit at a time
    )
    if m.freeze_vision and (visual := _visual_module(policy)) is not None:
        visual.requires_grad_(False)
    if m.gradient_checkpointing:
        enable_activation_checkpointing(policy)
        if m.checkpoint_layers is not None:
            limit_activation_checkpointing(policy, m.checkpoint_layers)
    if mesh is not None:
        import torch

        master = policy.dtype == torch.float32
        shard_model(policy, mesh, param_dtype=torch.bfloat16 if g.bf16 and master else None)
    lora_model = lora.add_policy_adapter(policy, m, checkpoint) if m.lora_r else None
    return policy, lora_model, _Holder(config, device, policy, lora_model, mesh)(plan)


def build_initial_reference(config: TrainConfig, device, policy, lora_model, mesh=None) -> Reference:
    """The initial model (``model.path``) as a frozen `Reference` beside the run's own: CDPO's anchor
    (``cdpo.anchor_beta``) or what ``kl_init`` is measured against. For a LoRA policy it is the
    policy's base with the adapters off (no extra memory); otherwise a third model, in bf16 under
    ``grpo.bf16``."""
    kind = "policy_base" if config.model.lora_r else "model"
    return _Holder(config, device, policy, lora_model, mesh)(lora.ReferencePlan(kind, config.model.path))


class _Holder:
    """Holds a planned reference: loads it as a frozen model, merges an adapter, or switches the
    policy's own adapters (`Reference`)."""

    def __init__(self, config: TrainConfig, device, policy, lora_model, mesh):
        m, g = config.model, config.grpo
        self.m, self.device, self.policy, self.lora_model = m, device, policy, lora_model
        # a separate reference is sharded like the policy (distributed.reference = shard) or whole
        self.mesh = mesh
        self.shard_reference = shard_reference = mesh is not None and config.distributed.reference == "shard"
        self.kwargs = {
            "dtype": "bfloat16" if g.bf16 else m.dtype,
            "attn_implementation": m.attn_implementation,
            "trust_remote_code": m.trust_remote_code,
            "device": None if shard_reference else device,
        }

    def frozen(self, model):
        model = model.requires_grad_(False)
        return shard_model(model, self.mesh) if self.shard_reference else model

    def __call__(self, plan: lora.ReferencePlan) -> Reference | None:
        """The `Reference` of ``plan`` (None for kind none: beta = 0)."""
        if plan.kind == "model":
            return Reference(plan, self.frozen(load_model(plan.path, **self.kwargs)))
        if plan.kind == "merged_adapter":
            if self.m.lora_r:
                warn(
                    f"the reference adapter's base {plan.base} is not the policy's ({self.m.path}), so it is "
                    f"loaded as a second model; if it is the same model, set reference_base={self.m.path} to "
                    "share one base"
                )
            merged = load_merged_adapter(plan.path, plan.base, **self.kwargs)
            return Reference(plan, self.frozen(merged))
        if plan.in_policy:
            if plan.kind == "policy_adapter":
                lora.add_reference_adapter(self.lora_model, plan.path, self.device)
            return Reference(plan, policy=self.policy, lora_model=self.lora_model)
        return None
