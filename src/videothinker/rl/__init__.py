"""RL: rewards, log-probs, losses (pure tensor functions), rollout, trainer, stages."""
