"""Run one job from Python (a notebook, a script) through Hydra's compose API.

    from bench import run
    result = run(["task=digits", "optimizer=adam", "train.steps=50"], output_dir="runs/try1")
    result["status"], result["final"]["val_acc"]

The job is the same as ``python -m bench ...`` with the same overrides: the same validation
(bad input raises :class:`bench.errors.ConfigError`), the same record (``result.json``,
``metrics.jsonl``, ``.hydra/config.yaml``) in ``output_dir``, the same skip-completed check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def run(overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_dir: str | Path | None = None) -> dict:
    """Compose the config with ``overrides``, run the job in ``output_dir``, return its result.json content.

    ``output_dir`` defaults to Hydra's ``hydra.run.dir`` pattern (``outputs/<date>/<time>``);
    ``config_dir`` to the suite's own ``conf/``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from bench import app
    from bench.plan import validate

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir or app.CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    hydra_cfg = cfg.hydra
    out = Path(output_dir) if output_dir is not None else Path(hydra_cfg.run.dir)
    with open_dict(hydra_cfg):
        hydra_cfg.runtime.output_dir = str(out.resolve())
        hydra_cfg.mode = RunMode.RUN
        hydra_cfg.job.name = "api"
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.set_struct(job_cfg, True)
        validate(job_cfg)  # before anything is written, as on the command line
        hydra_dir = out / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(job_cfg, hydra_dir / "config.yaml")
        OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
        return app.run(job_cfg)
    finally:  # the caller's process is left as it was: no Hydra job seems to run after this returns
        HydraConfig.instance().cfg = saved
