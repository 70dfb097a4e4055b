"""The per-step metrics of a batch of rollouts: rewards per function and per question kind,
completion lengths, degenerate completions (the rows of log.jsonl; rl/trainer.py)."""

from __future__ import annotations

import torch


def rollout_metrics(batches: list, reward_funcs: list[str], G: int, gather) -> dict[str, float]:
    """Reward per function and per question_kind, completion length, over the step's completions
    on every process (gathered in process order: the global batch's), and the share of degenerate
    completions (rl/health.py). ``batches`` are the step's `MicroBatch` es; ``gather`` collects a
    picklable value from every process."""
    local = {
        "total": [float(v) for mb in batches for v in mb.total_reward],
        "kinds": [r.question_kind for mb in batches for r in mb.records for _ in range(G)],
        "lengths": [float(n) for mb in batches for n in mb.rollout.completion_mask.sum(dim=1).tolist()],
        "degenerate": [mb.degenerate for mb in batches],
        **{name: [v for mb in batches for v in mb.rewards[name]] for name in reward_funcs},
    }
    parts = gather(local)
    column = {key: [v for part in parts for v in part[key]] for key in local}
    out: dict[str, float] = {}
    total = torch.tensor(column["total"])
    out["reward"] = float(total.mean())
    out["reward_std"] = float(total.std()) if total.numel() > 1 else 0.0
    for name in reward_funcs:
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


def health_metrics(
    logprobs: torch.Tensor, entropy: torch.Tensor, rollout, config, loss_metrics: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The policy's mean token entropy, and its KL to the bias model (stage cdpo: ``kl_bias``) and to
    the initial model (``kl_init``, where its log-probs are at hand), aggregated as the loss's ``kl``
    (rl/health.py). ``logprobs`` and ``entropy`` are the policy's [N, T]; ``config`` the `TrainConfig`;
    ``loss_metrics`` those `policy_loss` returned, whose ``kl`` (to the reference) and ``kl_anchor``
    (to the initial model) are taken as they are rather than computed again."""
    from videothinker.rl.losses import aggregated_kl

    mask = rollout.completion_mask.to(entropy.dtype)  # [N, T]
    out = {"entropy": (entropy * mask).sum() / mask.sum().clamp(min=1.0)}
    if rollout.ref_logprobs is not None and config.stage in ("cdpo", "grpo"):
        out["kl_bias" if config.stage == "cdpo" else "kl_init"] = loss_metrics["kl"]
    if "kl_anchor" in loss_metrics:
        out["kl_init"] = loss_metrics["kl_anchor"]
    elif rollout.init_logprobs is not None:  # cdpo.track_init_kl: the initial model in no loss
        g = config.grpo
        out["kl_init"] = aggregated_kl(
            logprobs, rollout.init_logprobs, rollout.completion_mask,
            kl_clamp=g.kl_clamp, loss_type=g.loss_type, max_completion_length=g.max_completion_length,
        )  # fmt: skip
    return out
