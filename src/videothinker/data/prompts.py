"""Prompt templates: the reference training template and the reference evaluation template.

Training (the public VideoThinker / TW-GRPO code) has three variants, chosen by how many letters an
answer may have: ``single`` (one letter), ``multiple`` (letters separated by commas) and ``mixed``
(either). ``auto`` picks ``single`` or ``multiple`` per record from its solution.

Evaluation uses the Video-R1 reasoning template plus a suffix per problem type.
"""

from __future__ import annotations

from videothinker.data.records import MULTIPLE_CHOICE, Record

TRAIN_TEMPLATES = {
    "single": "{Question}  Output the thinking process in <think> </think> and final answer "
    "(select one letter) in <answer> </answer> tags.",
    "multiple": "{Question}  Output the thinking process in <think> </think> and final answer "
    "(select letters separated by ,) in <answer> </answer> tags.",
    "mixed": "{Question}  Output the thinking process in <think> </think> and final answer "
    "(letters separated by , if multiple) in <answer> </answer> tags.",
}
TRAIN_TEMPLATE_MODES = (*TRAIN_TEMPLATES, "auto")

EVAL_TEMPLATE = (
    "{Question}\n"
    "Please think about this question as if you were a human pondering deeply. "
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions "
    "It's encouraged to include self-reflection or verification in the reasoning process. "
    "Provide your detailed reasoning between the <think> </think> tags, and then give your final answer "
    "between the <answer> </answer> tags."
)
EVAL_TYPE_SUFFIX = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
    "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the "
    "<answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}
# A multi-answer record would be asked for "the single option letter" by the reference suffix, which
# contradicts its solution; such records get this suffix instead.
EVAL_MULTI_ANSWER_SUFFIX = (
    " Please provide all correct option letters separated by commas (e.g., A or A,C) within the "
    "<answer> </answer> tags."
)


def question_text(record: Record) -> str:
    """The question with its options, as the reference code shows it to the model.

    >>> from videothinker.data.records import parse_record
    >>> r = parse_record({"problem": "Which?", "options": ["A. x", "B. y"], "solution": "A"})
    >>> print(question_text(r))
    Which?
    Options:
    A. x
    B. y
    """
    if record.problem_type != MULTIPLE_CHOICE or not record.options:
        return record.problem
    return record.problem + "\nOptions:\n" + "\n".join(record.options)


def train_prompt(record: Record, mode: str = "mixed") -> str:
    """The reference training prompt for a record (``mode``: single, multiple, mixed or auto)."""
    if mode not in TRAIN_TEMPLATE_MODES:
        raise ValueError(
            f"unknown training template {mode!r}; expected one of {', '.join(TRAIN_TEMPLATE_MODES)}"
        )
    if mode == "auto":
        mode = "multiple" if "," in record.solution else "single"
    return TRAIN_TEMPLATES[mode].format(Question=question_text(record))


def eval_prompt(record: Record) -> str:
    """The reference evaluation prompt for a record: reasoning template plus the per-type suffix."""
    suffix = EVAL_TYPE_SUFFIX[record.problem_type]
    if record.problem_type == MULTIPLE_CHOICE and "," in record.solution:
        suffix = EVAL_MULTI_ANSWER_SUFFIX
    return EVAL_TEMPLATE.format(Question=question_text(record)) + suffix


def chat_messages(prompt: str, data_type: str = "video") -> list[dict]:
    """The one-turn chat of a prompt with its visual input placed first, for `apply_chat_template`.

    The visual content itself is passed to the processor separately (decoded frames), so the message
    holds only a placeholder of the right type. Text-only records (no media) get no placeholder.
    """
    content: list[dict] = []
    if data_type in ("video", "frame"):
        content.append({"type": "video"})
    elif data_type == "image":
        content.append({"type": "image"})
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]
