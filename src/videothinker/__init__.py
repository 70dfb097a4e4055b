"""videothinker: RL fine-tuning of lightweight video VLMs without perceptual shortcuts.

Implements VideoThinker (CVPR 2026): bias-aware training builds a *bias model* by GRPO without KL on
shortcut-friendly (observational) questions; Causal Debiasing Policy Optimization (CDPO) then trains
the policy with GRPO whose KL term is measured against the bias model with a negative coefficient.
"""

__version__ = "0.1.0"


def _quiet_torchao_import_notice() -> None:
    """transformers imports torchao whenever it is installed (its quantizer registry, on every model
    load), and torchao 0.18 on torch 2.14 then logs two deprecation notices about ``register_constant``
    on Enum types through torch's ``torch.utils._pytree`` logger: noise at the start of every command,
    nothing a user can act on. Drop exactly those records; every other message of that logger stays."""
    import logging

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "register_constant() on Enum subclasses" not in record.getMessage()

    logging.getLogger("torch.utils._pytree").addFilter(_Filter())


_quiet_torchao_import_notice()
