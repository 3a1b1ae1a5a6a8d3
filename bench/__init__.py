"""warmup-bench: a Hydra-configured benchmark suite for learning-rate warm-up and LR/batch-size studies."""

__version__ = "0.1.0"

from omegaconf import OmegaConf

# ${mul:a,b} multiplies two numbers in a config, so a preset can sweep an LR multiplier
# over a per-optimizer reference LR (conf/experiment/lr_batch_scaling.yaml). Registered on
# import of the package, which every Hydra process (joblib and submitit workers too) does
# before it resolves a job's config.
OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b), replace=True)
# ${ratio:a,b} = a / b, e.g. a warm-up start factor of base_size / size (Goyal et al.'s 1/k; conf/experiment/goyal_cifar.yaml)
OmegaConf.register_new_resolver("ratio", lambda a, b: float(a) / float(b), replace=True)


def _lookup(table, key):
    """``${lookup:${table},${key}}``: the entry of a mapping for a key given as a number or text (e.g. a per-batch-size
    LR centre, conf/experiment/lr_batch_fashion.yaml); a missing key names the keys there are."""
    for k in (key, str(key)):
        if k in table:
            return table[k]
    raise KeyError(f"no entry {key!r} in {dict(table)}; keys: {', '.join(map(str, table))}")


OmegaConf.register_new_resolver("lookup", _lookup, replace=True)


def run(overrides=(), output_dir=None, config_dir=None) -> dict:
    """Run one job from Python and return its result.json content (see :func:`bench.api.run`)."""
    from bench.api import run as _run

    return _run(overrides, output_dir, config_dir)
