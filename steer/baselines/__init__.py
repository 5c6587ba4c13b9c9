"""Comparison baselines measured in the same sweep as the n-gram prior: LoRA and style prompting."""
