"""Bounds on CDPO's repulsion and the collapse guard of every run: the ``cdpo`` and ``collapse``
sections of `videothinker.config.TrainConfig` (docs/LOSS.md, "Bounded repulsion"; docs/TRAINING.md,
"Collapse").

The paper's repulsion (a k3 KL to the bias model with beta < 0) either vanishes (beta -0.01: about
1e-4 of the loss) or collapses the policy into degenerate text (beta -0.2 and beyond, in the lab).
The options here bound it; every one is off unless set, and then CDPO is the paper's exactly.
"""

from __future__ import annotations

import dataclasses

from videothinker.yaml_config import help_field

REPULSION_SHAPES = ("k3", "logsigmoid")  # rl/losses.py's SHAPES (a test holds them equal)


@dataclasses.dataclass
class CDPOConfig:
    """Bounded forms of CDPO's repulsion from the bias model (stage cdpo; rl/losses.py)."""

    kl_cap: float | None = help_field(
        None,
        "per-token cap on the repelled k3 term: min(k3, kl_cap), so a token adds at most |beta| * kl_cap "
        "and one past the cap gets no repulsive gradient (PAPO's kl_prcp_cap). None: the paper's "
        "uncapped term",
    )
    one_sided: bool = help_field(
        False,
        "repel only on tokens the bias model finds at least as likely as the policy (pushes them down); "
        "never push up the policy's own likelier tokens, the side that sharpens into degenerate text",
    )
    shape: str = help_field(
        "k3",
        "the repelled term's shape: k3 (the paper's KL estimate) | logsigmoid (saturating, after NPO: "
        "log(2 sigmoid(ref_logp - logp)), 0 where the policy and the bias model agree, at most log 2; "
        "pushes a token down with weight 1/2 where they agree, where k3 pushes with weight 0, and fades "
        "as the policy falls below the bias model; needs one_sided: two-sided it attracts)",
    )
    anchor_beta: float = help_field(
        0.0,
        "coefficient (>= 0) of an attracting k3 KL to the initial model (model.path) beside the "
        "repulsion: a third model in the step (for a LoRA policy, its base with the adapters off, no "
        "extra memory). 0: none",
    )
    kl_target: float | None = help_field(
        None,
        "adapt |beta| each step so that KL(policy || bias) holds at kl_target times the KL measured over "
        "the first kl_target_warmup steps (about KL(base || bias)); grpo.beta is the starting value. "
        "None: beta fixed",
    )
    kl_target_warmup: int = help_field(5, "steps whose mean KL sets the controller's target")
    kl_target_rate: float = help_field(
        0.1, "the controller changes |beta| by at most a factor exp(rate) a step"
    )
    beta_max: float = help_field(1.0, "the controller keeps |beta| at most this")
    track_init_kl: bool = help_field(
        False,
        "also compute the initial model's log-probs to log kl_init (KL(policy || initial model)) when no "
        "anchor does: a third forward pass a step, used in no loss",
    )

    @property
    def bounded(self) -> bool:
        """Whether any option changes the paper's loss."""
        return (
            self.kl_cap is not None
            or self.one_sided
            or self.shape != "k3"
            or self.anchor_beta > 0
            or self.kl_target is not None
        )

    @property
    def needs_initial_model(self) -> bool:
        return self.anchor_beta > 0 or self.track_init_kl

    def problems(self, stage: str, beta: float) -> list[str]:
        out = []
        if self.kl_cap is not None and self.kl_cap <= 0:
            out.append(f"cdpo.kl_cap must be > 0 (None: no cap), got {self.kl_cap}")
        if self.shape not in REPULSION_SHAPES:
            out.append(f"cdpo.shape must be one of {', '.join(REPULSION_SHAPES)}, got {self.shape!r}")
        if self.shape == "logsigmoid" and not self.one_sided:
            out.append(
                "cdpo.shape logsigmoid needs cdpo.one_sided true: two-sided, on the policy's own samples it "
                "attracts the policy to the bias model (docs/LOSS.md)"
            )
        if self.anchor_beta < 0:
            out.append(f"cdpo.anchor_beta attracts: it must be >= 0, got {self.anchor_beta}")
        if self.kl_target is not None and self.kl_target <= 0:
            out.append(f"cdpo.kl_target must be > 0 (None: beta fixed), got {self.kl_target}")
        if self.kl_target_warmup < 1 or self.kl_target_rate <= 0 or self.beta_max <= 0:
            out.append("cdpo.kl_target_warmup must be >= 1, cdpo.kl_target_rate and cdpo.beta_max > 0")
        if (self.bounded or self.track_init_kl) and (stage != "cdpo" or beta >= 0):
            out.append(
                "the cdpo options bound a repulsion from the bias model: they need stage cdpo with "
                f"grpo.beta < 0 (got stage {stage}, beta {beta:g}); an attraction to the initial model alone "
                "is stage grpo's beta"
            )
        return out


@dataclasses.dataclass
class CollapseConfig:
    """When a run has collapsed and stops (rl/health.py; docs/TRAINING.md, "Collapse"). Each rule
    compares the mean over the last ``window`` steps with the mean over the first ``window``."""

    enabled: bool = help_field(
        True, "stop a run whose format reward, entropy or degenerate share collapses (rules below)"
    )
    window: int = help_field(5, "steps averaged on each side of the comparison")
    min_format_ratio: float = help_field(
        0.5,
        "stop when the format reward falls below this fraction of its start (checked when the start is "
        "at least 0.2 and the run has a format reward)",
    )
    min_entropy_ratio: float = help_field(
        0.05, "stop when the policy's mean token entropy falls below this fraction of its start"
    )
    max_degenerate_rise: float = help_field(
        0.5,
        "stop when the share of degenerate completions (no answer tag, or one token making up over half "
        "of a completion of 8 tokens or more) rises this much over its start",
    )

    def problems(self) -> list[str]:
        out = [] if self.window >= 1 else [f"collapse.window must be >= 1, got {self.window}"]
        for name in ("min_format_ratio", "min_entropy_ratio", "max_degenerate_rise"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"collapse.{name} must be in [0, 1], got {getattr(self, name)}")
        return out
