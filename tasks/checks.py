"""Small validators for the tasks' ``check_config`` classmethods.

Each one raises :class:`bench.errors.ConfigError` through :func:`bench.errors.bad` (``key=value: allowed``)
or returns the value unchanged. Booleans are refused wherever a number is asked for: YAML's ``true``
is an ``int`` to Python, but ``task.hidden=true`` is a mistake, not a width of 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePath
from typing import Any, Iterable

from bench.errors import bad


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def int_at_least(key: str, v: Any, low: int, allowed: str | None = None, allow_none: bool = False) -> Any:
    """An integer >= ``low`` (or None when ``allow_none``)."""
    if v is None and allow_none:
        return v
    if not is_int(v) or v < low:
        raise bad(key, v, allowed or f"an integer >= {low}" + (" or null" if allow_none else ""))
    return v


def number_in(key: str, v: Any, low: float, high: float, allowed: str, low_open: bool = False, high_open: bool = False) -> Any:
    """A finite number in the interval from ``low`` to ``high``; ``*_open`` excludes that end."""
    ok = is_number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise bad(key, v, allowed)
    return v


def positive(key: str, v: Any, allowed: str = "a number > 0") -> Any:
    """A finite number > 0."""
    return number_in(key, v, 0.0, math.inf, allowed, low_open=True, high_open=True)


def choice(key: str, v: Any, options: Iterable[str], allowed: str | None = None) -> Any:
    """One of ``options`` (strings)."""
    options = tuple(options)
    if not isinstance(v, str) or v not in options:
        raise bad(key, v, allowed or f"one of {', '.join(options)}")
    return v


def flag(key: str, v: Any) -> Any:
    """true or false."""
    if not isinstance(v, bool):
        raise bad(key, v, "true or false")
    return v


def text(key: str, v: Any, allowed: str) -> Any:
    """A non-empty string."""
    if not isinstance(v, str) or not v:
        raise bad(key, v, allowed)
    return v


def int_pair(key: str, v: Any, allowed: str) -> list[int]:
    """Two positive integers (a list of conv widths)."""
    vals = list(v) if v is not None and not isinstance(v, (str, int, float, bool)) else None
    if vals is None or len(vals) != 2 or not all(is_int(x) and x >= 1 for x in vals):
        raise bad(key, vals if vals is not None else v, allowed)
    return vals


CACHE_ENV = "BENCH_CACHE"
DEFAULT_CACHE = "~/.cache/warmup-bench"


def cache_root() -> Path:
    """Where tasks keep files worth reusing across runs (trained tokenizers, the GAN metric's classifier):
    ``$BENCH_CACHE``, else ``~/.cache/warmup-bench``. Config keys name folders inside it, never outside."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def relative_path(key: str, v: Any, allowed: str) -> str:
    """A non-empty relative path that stays below its base: no absolute path, no ``~``, no ``..`` part."""
    text(key, v, allowed)
    p = PurePath(v)
    if p.is_absolute() or v.startswith("~") or ".." in p.parts:
        raise bad(key, v, allowed)
    return v


def cache_path(v: str) -> Path:
    """A ``*.cache_dir`` value (checked by :func:`relative_path`) as a folder under :func:`cache_root`."""
    return cache_root() / v


def job_path(v: str) -> Path:
    """An output file value (checked by :func:`relative_path`) under the job's output directory: Hydra's
    ``runtime.output_dir`` inside a run, the current directory for a task built outside one (a script, a test)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    out = OmegaConf.select(HydraConfig.instance().cfg, "hydra.runtime.output_dir", default=None) if HydraConfig.initialized() else None
    return Path(out or ".") / v
