"""The command line, ``python -m bench`` and ``warmup-bench``: Hydra's entry point.

This module imports Hydra and nothing heavy: ``--help``, ``--hydra-help``, ``--cfg``, ``--info`` and tab
completion (``-sc``) answer at Hydra's speed, without importing torch. The job itself (:func:`bench.app.job`)
is imported when Hydra runs one.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


def _conf_dir() -> str:
    """The checkout's top-level conf/ when running from a checkout (or an editable install), else the
    copy installed with the package as bench/conf (pyproject.toml maps conf/ there at build time)."""
    here = Path(__file__).resolve().parent
    checkout = here.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "config.yaml").is_file():
        return str(checkout / "conf")
    return str(here / "conf")


CONF_DIR = _conf_dir()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from bench.app import job

    return job(cfg)
