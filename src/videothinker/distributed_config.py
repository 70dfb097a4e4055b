"""How the processes of a multi-process run (torchrun, ``accelerate launch``) share the model: the
``distributed`` section of `videothinker.config.TrainConfig` (docs/TRAINING.md, "Multi-GPU").

``replicate`` keeps a full copy of the policy, its gradients and its optimizer state on every process
and averages gradients with one all-reduce per step: a run is capped at what one GPU holds.
``fsdp`` shards parameters, gradients and optimizer state over the processes with FSDP2
(``torch.distributed.fsdp.fully_shard``; models/sharding.py), one shard unit per decoder layer and
per vision block, as verl, EasyR1, TRL and ms-swift do with FSDP / ZeRO-3.
"""

from __future__ import annotations

import dataclasses

from videothinker.yaml_config import choice_problems, help_field

STRATEGIES = ("replicate", "fsdp")
REFERENCE_HOLDING = ("shard", "replicate")
# torchao 0.18's OptimState8bit / OptimState4bit inside DTensors: the first step fails (torch 2.14, CPU)
UNSHARDABLE_OPTIMIZERS = ("adamw_torch_8bit", "adamw_torch_4bit")


@dataclasses.dataclass
class DistributedConfig:
    """How several processes hold the policy and the reference model."""

    strategy: str = help_field(
        "replicate",
        "replicate: every process holds the whole policy, its gradients and AdamW state, gradients "
        "averaged by one all-reduce per step | fsdp: all three sharded over the processes (FSDP2, one "
        "unit per decoder layer and vision block; bf16 compute with fp32 master weights when grpo.bf16), "
        "for models one GPU cannot train (Qwen2.5-VL-7B with fp32 masters: about 130 GB). Also valid on "
        "one process (then it shards nothing)",
    )
    reference: str = help_field(
        "shard",
        "fsdp: the frozen reference model sharded like the policy (its memory split over the processes, "
        "its layers gathered for each pass) | replicate: a whole copy on every process (no gathering; "
        "cheaper when it fits). Ignored with strategy replicate",
    )

    def problems(self, lora_r: int = 0, optim: str = "adamw_torch_fused") -> list[str]:
        out = choice_problems("distributed.strategy", self.strategy, STRATEGIES)
        out += choice_problems("distributed.reference", self.reference, REFERENCE_HOLDING)
        if self.strategy == "fsdp" and optim in UNSHARDABLE_OPTIMIZERS:
            out.append(
                f"distributed.strategy = fsdp cannot step grpo.optim = {optim}: torchao's low-bit moment "
                "states fail on sharded parameters (no aten.view.dtype for them under torch.compile); use "
                "adamw_torch_fused (fp32 masters: 16 bytes a parameter, divided by the processes) or "
                "adamw_torch_bf16_sr"
            )
        if self.strategy == "fsdp" and lora_r > 0:
            out.append(
                "distributed.strategy = fsdp does not train LoRA adapters (model.lora_r > 0); a LoRA "
                "policy's trained weights are small: use distributed.strategy = replicate"
            )
        return out
