"""videothinker: RL fine-tuning of lightweight video VLMs without perceptual shortcuts.

Implements VideoThinker (CVPR 2026): bias-aware training builds a *bias model* by GRPO without KL on
shortcut-friendly (observational) questions; Causal Debiasing Policy Optimization (CDPO) then trains
the policy with GRPO whose KL term is measured against the bias model with a negative coefficient.
"""

__version__ = "0.1.0"
