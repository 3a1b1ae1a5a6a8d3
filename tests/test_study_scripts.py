"""The study scripts share their start (scripts/study_lib.sh): each names an experiment preset that exists, and a
part runs `python -m bench -m experiment=STUDY hydra.sweep.dir=SWEEP/PART report=false ...` with W&B offline."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import ROOT

# study_goyal_warmup.sh keeps its own two-line start (tests/test_digits_norm.py reads its commands)
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("study_*.sh") if p.name not in ("study_lib.sh", "study_goyal_warmup.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_study_script_names_an_existing_preset(script):
    text = script.read_text()
    m = re.search(r"^STUDY=(\w+)$", text, re.M)
    assert m and (ROOT / "conf" / "experiment" / f"{m[1]}.yaml").is_file(), script.name
    assert text.index(m[0]) < text.index('source "$(dirname "$0")/study_lib.sh"') < re.search(r"^\s*part \S", text, re.M).start()


def test_a_part_runs_the_preset_into_its_sweep_folder(tmp_path):
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "WANDB_MODE=$WANDB_MODE" "$@" > "$STUB_LOG.$$"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"PYTHON": str(stub), "SWEEP": str(tmp_path / "s"), "STUB_LOG": str(tmp_path / "call")}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "study_warmup_mechanism.sh")], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"[warmup_mechanism] sweep directory: {tmp_path / 's'}" in p.stdout
    calls = [f.read_text().splitlines() for f in tmp_path.glob("call.*")]
    first = next(c for c in calls if f"hydra.sweep.dir={tmp_path / 's'}/mlp_sgd_warm" in c)
    assert first[:6] == ["WANDB_MODE=offline", "-m", "bench", "-m", "experiment=warmup_mechanism", f"hydra.sweep.dir={tmp_path / 's'}/mlp_sgd_warm"]
    assert "report=false" in first


WITH_PARTS = [p for p in SCRIPTS if re.search(r"^PARTS=\(", p.read_text(), re.M)]


@pytest.mark.parametrize("script", WITH_PARTS, ids=[p.name for p in WITH_PARTS])
def test_an_unknown_part_stops_with_one_line_naming_the_allowed_ones(script, tmp_path):
    parts = re.search(r"^PARTS=\((.*)\)$", script.read_text(), re.M)[1].split()
    env = os.environ | {"PYTHON": "/bin/false", "SWEEP": str(tmp_path / "s")}  # nothing may run: a call would fail
    p = subprocess.run(["bash", str(script), "bogus"], env=env, capture_output=True, text=True, timeout=60)
    study = re.search(r"^STUDY=(\w+)$", script.read_text(), re.M)[1]
    assert p.returncode == 2 and p.stderr == f"error: unknown part 'bogus' of {study}; allowed: {' '.join(parts)} all\n"
    assert "part " not in p.stdout and not (tmp_path / "s").exists()
