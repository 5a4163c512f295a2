"""Inference engines: the vLLM wrapper (generate, judge log-probs) and the reward-model scorer."""
