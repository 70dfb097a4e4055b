"""LoRA: the policy as low-rank adapters on a frozen base, and a LoRA reference sharing that base.

With ``model.lora_r > 0`` the trainer injects LoRA adapters (peft) into the policy's language model
(attention and MLP projections; the vision tower only if ``model.lora_vision``) and trains only
them. Checkpoints and ``OUT/final`` then hold the adapter (``adapter_config.json`` +
``adapter_model.safetensors``, with the base's resolved path in ``base_model_name_or_path``) and the
processor: a bias model of a few MB instead of a full copy of the base.

The reference model of the KL term is planned here (`plan_reference`) from the config and the files
alone, before anything loads, so the first log line can say which it is:

- ``model``: a full checkpoint folder, loaded as a second, frozen model (the usual case);
- ``policy_adapter``: a LoRA adapter on the policy's own base, while the policy is LoRA too. It is
  loaded into the policy's peft model under the name ``reference`` (frozen), and the reference pass
  runs the policy's model with that adapter active (`reference_view`): one base in memory;
- ``merged_adapter``: a LoRA adapter for a fully fine-tuned policy (or on another base): its base is
  loaded, the adapter merged in, as a separate frozen model: two bases in memory;
- ``policy_base``: stage grpo, a LoRA policy and no reference given: the initial model is the base
  with the adapters switched off (`reference_view` with no adapter); no second copy.

peft is an optional dependency (``pip install 'videothinker[lora]'``), imported only when LoRA is
asked for.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from videothinker.adapters import adapter_base, adapter_config, is_adapter, require_peft, resolved
from videothinker.models.vision import vlm_body

if TYPE_CHECKING:
    from videothinker.config import ModelConfig, TrainConfig

POLICY_ADAPTER = "default"  # peft's name for the first adapter: what a saved adapter loads back as
REFERENCE_ADAPTER = "reference"

# -------------------------------------------------------------------------------------- the policy


def target_pattern(model, config: ModelConfig) -> str:
    """The peft ``target_modules`` regex (matched against full module names): the modules whose last
    name is one of ``config.lora_target_modules``, outside the vision tower unless
    ``config.lora_vision``."""
    names = "|".join(map(re.escape, config.lora_target_modules))
    visual = getattr(vlm_body(model), "visual", None)
    prefix = next((n for n, m in model.named_modules() if m is visual), None)
    if config.lora_vision or prefix is None:
        return rf"^(?:.*\.)?(?:{names})$"
    return rf"^(?!{re.escape(prefix)}\.)(?:.*\.)?(?:{names})$"


def add_policy_adapter(model, config: ModelConfig, checkpoint: Path | None = None):
    """Inject the policy's trainable LoRA adapter into ``model`` (in place) and freeze the rest.

    Args:
        model: the base model, as `load_model` returns it; it stays the model to call: peft injects
            the adapter layers into its modules, so sampling and log-probs run on it unchanged.
        config: lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_vision.
        checkpoint: resume: restore the adapter saved in this checkpoint instead of a fresh one.

    Returns:
        The peft model that owns the adapters (for saving, switching and disabling them).
    """
    peft = require_peft()
    if checkpoint is not None:
        if not is_adapter(checkpoint):
            raise ValueError(
                f"{checkpoint} holds a fully fine-tuned model, not a LoRA adapter: resume it with model.lora_r=0"
            )
        saved_r = adapter_config(checkpoint).get("r")
        if saved_r != config.lora_r:
            raise ValueError(
                f"{checkpoint} holds a LoRA adapter of rank {saved_r}, not model.lora_r = {config.lora_r}"
            )
        return peft.PeftModel.from_pretrained(
            model, checkpoint, adapter_name=POLICY_ADAPTER, is_trainable=True
        )
    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha if config.lora_alpha is not None else 2 * config.lora_r,
        lora_dropout=config.lora_dropout,
        target_modules=target_pattern(model, config),
        bias="none",
    )
    wrapped = peft.get_peft_model(model, lora, adapter_name=POLICY_ADAPTER)
    # A resolved path, so that a later run can tell whether a reference adapter shares the base.
    wrapped.peft_config[POLICY_ADAPTER].base_model_name_or_path = str(resolved(config.path))
    return wrapped


def save_adapter(lora_model, folder: str | Path) -> None:
    """Write the policy's adapter (never the reference's) as adapter_config.json +
    adapter_model.safetensors."""
    lora_model.save_pretrained(
        str(folder), safe_serialization=True, selected_adapters=[POLICY_ADAPTER], save_embedding_layers=False
    )


# ----------------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class ReferencePlan:
    """Which reference model the KL term uses and how it sits in memory (see the module docstring).

    kind: none | model | policy_adapter | merged_adapter | policy_base.
    path: the reference folder (the policy's base for policy_base); None for none.
    base: the resolved base of a LoRA reference adapter; None otherwise.
    """

    kind: str
    path: str | None = None
    base: Path | None = None

    @property
    def in_policy(self) -> bool:
        """Whether the reference pass runs the policy's own model (no second model loaded)."""
        return self.kind in ("policy_adapter", "policy_base")

    @property
    def adapter(self) -> str | None:
        """The adapter active in the reference pass (None: adapters off)."""
        return REFERENCE_ADAPTER if self.kind == "policy_adapter" else None

    def how(self) -> str:
        """How the reference is held, for the first log line."""
        return {
            "model": "a separate frozen model",
            "policy_adapter": f"LoRA adapter '{REFERENCE_ADAPTER}' on the policy's base",
            "merged_adapter": f"LoRA adapter merged into its base {self.base}, a separate frozen model: "
            "two bases in memory",
            "policy_base": "the policy's base with its LoRA adapter disabled",
            "none": "none",
        }[self.kind]


def plan_reference(config: TrainConfig) -> ReferencePlan:
    """The reference of a run, from the config and the reference folder's files (nothing loads).

    A LoRA reference adapter shares the policy's base when the policy is LoRA too and the adapter's
    base (``reference_base``, else its adapter_config.json) is the policy's ``model.path`` after
    resolving both paths.
    """
    if config.grpo.beta == 0:
        return ReferencePlan("none")
    lora_policy = config.model.lora_r > 0
    if config.reference is None:
        return ReferencePlan("policy_base" if lora_policy else "model", config.model.path)
    if not is_adapter(config.reference):
        return ReferencePlan("model", config.reference)
    base = adapter_base(config.reference, config.reference_base)
    if lora_policy and base == resolved(config.model.path):
        return ReferencePlan("policy_adapter", config.reference, base)
    return ReferencePlan("merged_adapter", config.reference, base)


def add_reference_adapter(lora_model, path: str | Path, device=None) -> None:
    """Load the adapter at ``path`` into the policy's peft model as ``reference``, frozen; the
    policy's adapter stays the active one and the only trainable one."""
    lora_model.load_adapter(
        str(path),
        adapter_name=REFERENCE_ADAPTER,
        is_trainable=False,
        torch_device=str(device) if device is not None else None,
    )
    lora_model.set_adapter(POLICY_ADAPTER)
    for name, param in lora_model.named_parameters():
        if f".{REFERENCE_ADAPTER}." in name:
            param.requires_grad_(False)


@contextlib.contextmanager
def reference_view(lora_model, adapter: str | None) -> Iterator[None]:
    """Inside: the policy's model computes the reference model, ``adapter`` active (None: every
    adapter off, i.e. the base). On exit the policy's adapter is active again and every parameter's
    ``requires_grad`` is what it was (peft's ``set_adapter`` marks the adapter it activates
    trainable), so the optimizer's parameters stay exactly the policy adapter's."""
    flags = [(p, p.requires_grad) for p in lora_model.parameters()]
    try:
        if adapter is None:
            with lora_model.disable_adapter():
                yield
        else:
            lora_model.set_adapter(adapter)
            try:
                yield
            finally:
                lora_model.set_adapter(POLICY_ADAPTER)
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
