"""Model inputs of a micro-batch's prompts, each within ``max_prompt_length``.

A prompt over the limit is rejected with an error naming the record (``data.prompt_truncation=error``,
the default) or has its question text cut, token by token, until it fits (``text``); video tokens are
never cut.
"""

from __future__ import annotations

from dataclasses import replace

from videothinker.console import warn
from videothinker.data.prompts import train_prompt
from videothinker.data.records import Record
from videothinker.models.inputs import build_inputs


def prompt_inputs(
    processor, records: list[Record], visuals: list, template: str, limit: int | None, truncation: str
):
    """Processor outputs for B prompts (left padded): input_ids, attention_mask, visual fields."""
    prompts = [train_prompt(r, template) for r in records]
    inputs = build_inputs(processor, prompts, visuals)
    if limit is not None:
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        if any(n > limit for n in lengths):
            prompts = [
                fit_prompt(processor, r, p, v, n, limit, template, truncation) if n > limit else p
                for r, p, v, n in zip(records, prompts, visuals, lengths)
            ]
            inputs = build_inputs(processor, prompts, visuals)
    return inputs


def fit_prompt(
    processor, record: Record, prompt: str, visual, length: int, limit: int, template: str, truncation: str
) -> str:
    """Cut a too-long prompt on the text side only (the question's words), never through video
    tokens; or raise, as ``truncation`` (data.prompt_truncation) says."""
    where = f"{record.source}, record {record.index}"
    if truncation != "text":
        raise ValueError(
            f"{where}: the prompt has {length} tokens, over max_prompt_length = {limit}; raise "
            "max_prompt_length, sample fewer or smaller frames (video.max_frames, video.max_pixels), or set "
            "data.prompt_truncation=text to cut the question text"
        )
    tokenizer = getattr(processor, "tokenizer", processor)
    words = tokenizer(record.problem, add_special_tokens=False)["input_ids"]
    keep = len(words)
    while length > limit:
        keep -= length - limit
        if keep <= 0:
            raise ValueError(
                f"{where}: the prompt is over max_prompt_length = {limit} even without its question text "
                "(the video alone is too long); sample fewer or smaller frames"
            )
        shorter = replace(record, problem=tokenizer.decode(words[:keep]))
        prompt = train_prompt(shorter, template)
        length = int(build_inputs(processor, [prompt], [visual])["attention_mask"].sum())
    warn(f"{where}: question text cut to {keep} tokens to fit max_prompt_length = {limit}")
    return prompt
