"""warmup-bench: a Hydra-configured benchmark suite for learning-rate warm-up and LR/batch-size studies."""

__version__ = "0.1.0"
