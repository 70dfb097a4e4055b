"""What a training run is set up with, in words and records: the sentence naming its reference model,
the initial model's role beside it, and the stage's training records (rl/trainer.py uses them)."""

from __future__ import annotations

from videothinker.config import TrainConfig
from videothinker.console import print0, warn
from videothinker.data.records import Record
from videothinker.models import lora


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


def anchor_description(config: TrainConfig) -> str:
    c = config.cdpo
    if c.anchor_beta > 0:
        return f"anchor, an attracting KL term with coefficient {c.anchor_beta:g} beside the repulsion"
    return "its log-probs measure kl_init only (cdpo.track_init_kl)"
