"""A reward plugged in by import path in the trainer tests: it varies between samples of an untrained
tiny model (whose accuracy and format rewards are all 0), so advantages are non-zero."""


def character_variety(completions: list[str], solutions: list[str], **kw) -> list[float]:
    """Share of distinct characters in a completion (0 for an empty one)."""
    return [len(set(c)) / len(c) if c else 0.0 for c in completions]
