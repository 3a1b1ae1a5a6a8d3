"""`pip install .` (not editable) into a fresh environment: the console script and `python -m bench`
work from any directory, with the configs shipped in the package. Nothing is downloaded: the fresh
environment sees the test environment's packages through a .pth file and installs with --no-deps."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, bench_env


def _sh(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_runs_from_anywhere(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "outputs", "multirun", "wandb", ".venv", "tests"))
    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, bench_env())
    py = venv / "bin" / "python"
    site = Path(_sh([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, bench_env()).stdout.strip())
    # the test environment's packages (torch, hydra, pip, setuptools, ...) after the venv's own, without its
    # editable warmup-bench: a path listed in a .pth file is not itself scanned for .pth files
    (site / "zz_outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in bench_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    _sh([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(src)], tmp_path, env)
    shutil.rmtree(src)  # the package must not need its source tree

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _sh([str(py), "-c", "import bench, bench.app as a; print(bench.__file__); print(a.CONF_DIR)"], elsewhere, env).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == str(site / "bench" / "conf")
    assert (site / "bench" / "conf" / "task" / "gan_ring.yaml").is_file() and (site / "bench" / "conf" / "hydra" / "help" / "bench.yaml").is_file()

    help_text = _sh([str(venv / "bin" / "warmup-bench"), "--help"], elsewhere, env).stdout
    assert "warmup-bench" in help_text and "task: " in help_text and "gan_ring" in help_text
    _sh([str(py), "-m", "bench", "task=gan_ring", "train.steps=3", "hardware.threads=1", "hydra.run.dir=run"], elsewhere, env)
    r = json.loads((elsewhere / "run" / "result.json").read_text())
    assert r["status"] not in ("failed", "diverged") and r["choices"]["optimizer"] == "adam_gan"  # the task's defaults list, from the packaged conf
