"""Language tasks through the real CLI: a tiny sweep over the four tasks, bad input, the study preset."""

from __future__ import annotations

import json
import math
from itertools import product

import pytest
from hydra import compose, initialize_config_dir

from bench.app import CONF_DIR
from bench.plan import validate
from bench.schedules import length_from_beta2
from conftest import metrics, results

TINY = ["task.width=32", "task.depth=2", "task.heads=2", "task.context_length=16", "task.eval_tokens=1024"]


@pytest.mark.slow
def test_tiny_sweep_over_the_language_tasks(bench, tmp_path):
    sweep = tmp_path / "sweep"
    proc = bench(
        "-m", "task=lm_postln,lm_preln,gpt2_lm,bert_mlm", "optimizer=adam", "optimizer.lr=3e-3", "batch.size=8", "batch.base_size=8",
        "train.steps=12", "train.eval_every=6", "train.log_every=3", "report=false", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip  (task.* overrides cannot go with a task sweep: Hydra applies them to the default task first)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {r["task"]: r for r in results(sweep)}
    assert set(recs) == {"lm_postln", "lm_preln", "gpt2_lm", "bert_mlm"}
    for name, r in recs.items():
        assert r["status"] == "completed", (name, r.get("error"))
        assert r["steps"] == 12 and r["primary_metric"] == "val_loss"
        assert r["throughput"]["tokens_per_step"] == 8 * 64
        assert r["throughput"]["tokens_per_s"] == pytest.approx(r["throughput"]["examples_per_s"] * 64)
        assert r["task_info"]["context_length"] == 64 and r["task_info"]["parameters"] > 10_000
        rows = metrics(r["output_dir"])
        evals = [row for row in rows if row["kind"] == "eval"]
        assert [e["step"] for e in evals] == [5, 11]
        assert evals[-1]["val_loss"] < evals[0]["val_loss"] + 0.5  # sane, finite values
        train = [row for row in rows if row["kind"] == "train"]
        assert train[-1]["train_loss"] < train[0]["train_loss"]  # seen: falls by 1.0-1.3 nats over seeds 0-2, every task
        assert set(r["test"]) == {"test_" + k[4:] for k in r["metric_modes"]}  # every metric once on the test split
        assert set(r["train_set"]) == {"train_set_" + k[4:] for k in r["metric_modes"]}  # and on the training sample (train_eval)
        assert r["lr_mean"] == pytest.approx(3e-3) and r["task_info"]["norm"] == ("pre" if name in ("lm_preln", "gpt2_lm") else "post")
        assert r["chance"]["val_loss"] == pytest.approx(math.log(r["task_info"]["vocab_size"]))
    assert "val_bpc" in recs["lm_preln"]["final"] and "val_acc" in recs["bert_mlm"]["final"]
    assert "masked_acc/model" in metrics(recs["bert_mlm"]["output_dir"])[0]
    assert recs["lm_postln"]["metric_modes"] == {"val_loss": "min", "val_ppl": "min", "val_bpc": "min"}


@pytest.mark.slow
def test_lm_run_ends_with_test_metrics_on_the_held_out_pieces(bench, tmp_path):
    """A real lm_preln run: validation during training, the test split once at the end (result.json ``test``)."""
    run = tmp_path / "run"
    proc = bench(
        "task=lm_preln", "optimizer=adam", "optimizer.lr=3e-3", "batch.size=8", "batch.base_size=8", "train.steps=8",
        "train.eval_every=4", "train.log_every=4", "hardware.threads=1", *TINY, f"hydra.run.dir={run}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((run / "result.json").read_text())
    assert r["status"] == "completed" and r["steps"] == 8
    assert set(r["test"]) == {"test_loss", "test_ppl", "test_bpc"}
    assert math.isfinite(r["test"]["test_loss"]) and r["test"]["test_loss"] != r["final"]["val_loss"]
    assert r["test"]["test_ppl"] == pytest.approx(math.exp(r["test"]["test_loss"]))
    info = r["task_info"]
    assert info["split_seed"] == 0 and info["pieces"] == 20 and len(info["val_pieces"]) == len(info["test_pieces"]) == 2
    assert info["train_chars"] + info["val_chars"] + info["test_chars"] > 400_000  # the three splits cover the corpus
    assert info["test_tokens"] == info["test_chars"] and info["test_blocks"] == 1024 // 16


@pytest.mark.slow
def test_bert_run_is_reproducible(bench, tmp_path):
    """Masking draws from the harness-seeded global RNG: the same seed gives the same metrics file."""
    args = ["task=bert_mlm", "optimizer=adam", "batch.size=8", "train.steps=6", "train.log_every=1", "train.eval_every=6", *TINY]
    a = bench(*args, f"hydra.run.dir={tmp_path / 'a'}")
    b = bench(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:]
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_code_2(bench, tmp_path):
    cases = [
        (["task=lm_postln", "task.heads=5"], "task.heads=5 is not allowed: a divisor of task.width=64"),
        (["task=gpt2_lm", "task.corpus.source=text", f"task.corpus.path={tmp_path / 'missing.txt'}"], "task.corpus.path="),
        # one held-out piece of ~1160 characters each: a context of 2000 fits the training text (232 windows) but not them
        (["task=bert_mlm", "task.corpus.pieces=400", "task.corpus.val_fraction=0.0025", "task.corpus.test_fraction=0.0025", "task.context_length=2000"],
         "task.context_length=2000 is not allowed: at most"),
    ]
    for args, msg in cases:
        run_dir = tmp_path / "run"
        proc = bench(*args, f"hydra.run.dir={run_dir}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert lines[-1].startswith("error: ") and msg in lines[-1], lines
        assert "Traceback" not in proc.stderr
        assert not (run_dir / "result.json").exists()


def test_study_preset_composes_and_fits_its_budget():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=transformer_warmup"], return_hydra_config=True)
        params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
        assert params["task"] == ["lm_postln", "lm_preln"]
        assert set(params["warmup"]) == {"none", "linear", "untuned_linear", "exponential"} and "radam" in params["optimizer"]
        assert len(params["seed"]) >= 3 and len(params["optimizer.lr"]) >= 3
        steps = cfg.train.steps
        assert length_from_beta2(cfg.optimizer.betas[1], 2.0) <= steps  # the untuned warm-up fits the budget
        for task, opt, warm in product(params["task"], params["optimizer"], params["warmup"]):
            job = compose(config_name="config", overrides=["experiment=transformer_warmup", f"task={task}", f"optimizer={opt}", f"warmup={warm}"])
            validate(job)  # every job of the sweep passes start-up validation
            assert list(job.optimizer.betas) == [0.9, 0.98] and job.train.steps == steps
    assert json.dumps(params)  # plain strings: what the sweeper launches
