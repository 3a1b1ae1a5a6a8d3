"""scripts/mechanism_tables.py on hand-built runs whose answers are known: the phase diagram's success rates and
stable LRs with the Fisher test, the sharpness over its limit at the end of the warm-up, and the paired gap."""

from __future__ import annotations

import json

import pytest

from conftest import load_script

mt = load_script("mechanism_tables")


def _run(root, i, *, opt="sgd", warm=0, lr=0.1, seed=0, success=True, test_loss=0.4, train_loss=0.3, sharp=None, p99=None):
    d = root / str(i)
    d.mkdir(parents=True)
    rec = {"config": {"task": {"model": "mlp"}, "optimizer": {"momentum": 0.9} if opt == "sgd" else {"betas": [0.9, 0.999]}},
           "choices": {"optimizer": opt, "warmup": "none" if warm == 0 else "linear"}, "warmup_steps": {"model": warm},
           "lr_peak": lr, "seed": seed, "status": "completed" if success else "diverged", "success": success,
           "test": {"test_acc": 0.9, "test_loss": test_loss} if success else {},
           "train_set": {"train_set_loss": train_loss} if success else {}, "final": {"val_acc": 0.9} if success else {}}
    (d / "result.json").write_text(json.dumps(rec))
    rows = []
    for step in range(0, 201, 10):
        lr_t = lr * min(1.0, (step + 1) / warm) if warm else lr
        row = {"kind": "train", "step": step, "lr": lr_t, "train_loss": 2.0 - step / 200}
        if sharp is not None and step % 40 == 0:
            row |= {"sharpness": sharp(step), "sharpness_limit": 3.8 / lr_t}
        if p99 is not None:
            row |= {"adaptive_step_p1": 0.01, "adaptive_step_p99": p99}
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_phase_stable_lr_and_fisher(tmp_path):
    i = 0
    for warm in (0, 80):
        for lr in (0.1, 0.2):
            for seed in range(5):
                ok = lr == 0.1 or warm == 80  # only the warm-up trains at 0.2
                _run(tmp_path, i, warm=warm, lr=lr, seed=seed, success=ok)
                i += 1
    runs = mt.load(tmp_path)
    cells, stable = mt.phase(runs)
    assert len(cells) == 4 and cells.loc[(cells["warmup_steps"] == 0) & (cells["lr"] == 0.2), "success_rate"].item() == 0
    per_w = stable[stable["lr"].isna()].set_index("warmup_steps")["stable_lr"]
    assert per_w[0] == 0.1 and per_w[80] == 0.2
    f = stable[(stable["lr"] == 0.2)]
    assert f["fisher_p"].item() == pytest.approx(2 / 252)  # 5/5 against 0/5: the two-sided exact p


def test_sharpness_ratio_at_the_end_of_the_warmup(tmp_path):
    _run(tmp_path, 0, warm=80, lr=0.38, sharp=lambda s: 5.0)  # limit at step 80: 3.8 / 0.38 = 10 -> ratio 0.5
    s = mt.sharpness(mt.load(tmp_path))
    assert s["ratio_end_of_warmup"].item() == pytest.approx(0.5)
    assert s["lambda0_over_peak_limit"].item() == pytest.approx(5.0 / 10.0)


def test_adaptive_spread_and_paired_gap(tmp_path):
    i = 0
    for seed in range(4):
        _run(tmp_path, i, opt="adam", warm=80, lr=0.004, seed=seed, test_loss=0.40, train_loss=0.35 - 0.01 * seed, p99=1.0)
        _run(tmp_path, i + 1, opt="adam", warm=0, lr=0.004, seed=seed, test_loss=0.40, train_loss=0.30 - 0.01 * seed, p99=10.0)
        i += 2
    a = mt.adaptive(mt.load(tmp_path)).iloc[0]
    assert a["gap_loss_diff"] == pytest.approx(-0.05) and a["gap_loss_pairs"] == 4  # warm-up: smaller gap by 0.05
    assert a["early_spread_warm80"] == pytest.approx(2.0) and a["early_spread_none"] == pytest.approx(3.0)
    assert a["early_spread_diff"] == pytest.approx(-1.0)
