"""scripts/gan_tables.py on hand-built GAN records whose answers are known: arm names, collapse counts with the
Fisher test against no warm-up at the same LR, the paired metric and D accuracy by seed, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, load_script

gt = load_script("gan_tables")


def _run(root, i, *, warmup="none", target="both", fraction=None, d_mult=1, lr=0.003, seed=0, collapsed=False, modes=7.0, d_real=0.6, d_fake=0.6):
    d = root / str(i)
    d.mkdir(parents=True)
    rec = {"task": "gan_ring", "seed": seed, "lr_base": lr, "status": "collapsed" if collapsed else "completed", "success": not collapsed,
           "choices": {"warmup": warmup}, "primary_metric": "modes", "metric_modes": {"modes": "max"},
           "config": {"task": {"warmup_on": target, "lr_mult": {"discriminator": d_mult, "generator": 1}}, "warmup": {"fraction": fraction}},
           "final_avg": {"modes": modes}, "test_avg": {"test_modes": modes, "test_d_acc_real": d_real, "test_d_acc_fake": d_fake},
           "task_info": {}}
    (d / "result.json").write_text(json.dumps(rec))


def test_arm_names():
    assert gt.arm_name("none", "both", None, 1.0) == "none"
    assert gt.arm_name("none", "both", None, 4.0) == "TTUR D x4"
    assert gt.arm_name("linear", "generator", 0.1, 1.0) == "G 10%"
    assert gt.arm_name("linear", "discriminator", 0.02, 1.0) == "D 2%"
    assert gt._order(["TTUR D x2", "G 10%", "none", "D 30%", "D 2%"]) == ["none", "D 2%", "D 30%", "G 10%", "TTUR D x2"]


def _study(root):
    """At LR 0.003: no warm-up never collapses (7 modes, D at 0.6); a 30 % warm-up on G collapses in every seed (3
    modes, D at 0.8); two time scales match none but for seed 0."""
    i = 0
    for seed in range(6):
        _run(root, i, seed=seed)
        _run(root, i + 1, warmup="linear", target="generator", fraction=0.3, seed=seed, collapsed=True, modes=3.0, d_real=0.8, d_fake=0.8)
        _run(root, i + 2, d_mult=2, seed=seed, modes=6.0 if seed == 0 else 7.0)
        i += 3


def test_collapse_fisher_and_paired_differences(tmp_path):
    _study(tmp_path)
    runs = gt.load(tmp_path)
    assert set(runs["arm"]) == {"none", "G 30%", "TTUR D x2"}
    c = gt.cells(runs)
    assert c.set_index("arm").loc["G 30%", "collapsed"] == 6 and c.set_index("arm").loc["none", "success_rate"] == 1
    col = gt.collapse(c).set_index("arm")
    assert col.loc["G 30%", "fisher_p"] == pytest.approx(2 / 924)  # 6/6 against 0/6: the two-sided exact p
    assert col.loc["TTUR D x2", "fisher_p"] == 1
    pr = gt.paired(runs).set_index("arm")
    g = pr.loc["G 30%"]
    assert g["metric_pairs"] == 6 and g["metric_diff"] == pytest.approx(-4.0) and g["d_acc_diff"] == pytest.approx(0.2)
    assert g["metric_p"] == pytest.approx(2 / 64)  # all six differences of one sign: the exact sign-flip p
    t = pr.loc["TTUR D x2"]
    assert t["metric_diff"] == pytest.approx(-1 / 6) and t["metric_p"] == pytest.approx(1.0)
    assert (pr["metric_p_holm"] >= pr["metric_p"]).all()


def test_cli_writes_every_file_and_refuses_a_missing_folder(tmp_path):
    _study(tmp_path / "sweep")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gan_tables.py"), str(tmp_path / "sweep"), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for name in ("cells.csv", "collapse.csv", "paired.csv", "gan_lr.png", "gan.md"):
        assert (out / name).stat().st_size > 0
    assert "G 30%" in (out / "gan.md").read_text()
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gan_tables.py"), str(tmp_path / "nope"), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: sweep folder")
