"""Language tasks through the real CLI: a tiny sweep over the four tasks, bad input, the study preset."""

from __future__ import annotations

import json
import math
import re
import shlex
from itertools import product

import pytest
from hydra import compose, initialize_config_dir

from bench.app import CONF_DIR
from bench.plan import validate
from bench.schedules import length_from_beta2
from conftest import ROOT, metrics, results

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
        # 12 steps learn no more than the character frequencies: a finished run, recorded stalled (a failure)
        assert r["status"] == "stalled" and not r["success"], (name, r["status"], r.get("error"), r.get("final"))
        assert r["final"]["val_loss"] > r["task_info"]["unigram_val_loss"] - 0.1
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
    assert r["status"] == "stalled" and r["steps"] == 8  # 8 steps: still at the unigram loss (tasks.language.STALL_MARGIN)
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


STUDY = ROOT / "scripts" / "study_transformer_warmup.sh"
PARTS = {  # part -> jobs: the LM study (lm/) and the BERT + RMSProp study (bert/)
    "lm/lm_linear": 150, "lm/lm_none": 100, "lm/lm_untuned": 50, "lm/lm_matched": 50,
    "lm/lm_edge_linear": 5, "lm/lm_edge_none": 10,
    "bert/bert_linear": 60, "bert/bert_none": 40, "bert/bert_untuned": 20, "bert/bert_matched": 20,
    "bert/bert_rmsprop_none": 25, "bert/bert_rmsprop_linear": 25,
    "confirm/linear": 20, "confirm/none_postln": 10, "confirm/none_preln": 10,
    "confirm/bert_linear": 10, "confirm/bert_none": 10,
}
CONFIRMED_LR = {  # the confirmation's cells: each arm at its best LR in the lm study
    ("lm_postln", "linear"): 0.008, ("lm_postln", "none"): 0.004, ("lm_preln", "linear"): 0.016, ("lm_preln", "none"): 0.004,
    ("bert_mlm", "linear"): 0.004, ("bert_mlm", "none"): 0.002,
}


def _study_parts() -> dict[str, list[str]]:
    """Part name -> the overrides of its ``part NAME ...`` line in the study script, bash arrays expanded, "$@" dropped."""
    text = STUDY.read_text()
    arrays = {m[1]: shlex.split(m[2]) for m in re.finditer(r"^([A-Z_]+)=\((.*)\)$", text, re.M)}
    parts = {}
    for line in text.splitlines():
        if line.strip().startswith("part "):
            words = shlex.split(line.strip())
            args = []
            for w in words[2:]:
                m = re.fullmatch(r"\$\{([A-Z_]+)\[@\]\}", w)
                args += arrays[m[1]] if m else [] if w == "$@" else [w]
            parts[words[1]] = args
    return parts


def _sweep(part: list[str]) -> dict[str, list[str]]:
    """key -> values of the preset's sweep with ``part`` on the command line (which wins for a key in both, as in Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=transformer_warmup"], return_hydra_config=True)
    strings = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + part
    return {
        o.get_key_element(): list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.input_line if o.is_delete() else o.get_value_element_as_str()]
        for o in OverridesParser.create().parse_overrides(strings)
    }


def _job(overrides: list[str]):
    """The composed job config and its resolved plan (``${hydra:runtime.choices.task}`` needs the Hydra config set)."""
    from hydra.core.hydra_config import HydraConfig

    from bench.plan import check_plan, resolve_plan
    from tasks.language import TransformerLMTask

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=transformer_warmup", *overrides], return_hydra_config=True)
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        validate(cfg)  # start-up validation, as the multirun pre-flight runs it for every job
        size = TransformerLMTask.static_train_size(cfg.task)
        check_plan(cfg, size, {"model": ({}, True)})
        return cfg, float(cfg.optimizer.lr), resolve_plan(cfg, size, {"model": ({}, True)})
    finally:  # global state: later tests read whether a Hydra job is running
        HydraConfig.instance().cfg = saved


def test_study_script_parts_compose_validate_and_count_their_jobs(tmp_path):
    """Every part of scripts/study_transformer_warmup.sh: its job count (as in the script's header), and one job per
    combination of its keys (seeds aside) composed, validated and planned: the issue's design holds for each."""
    parts = _study_parts()
    assert list(parts) == list(PARTS)
    header = STUDY.read_text().split("set -euo")[0]
    lm = bert = confirm = 0
    for name, overrides in parts.items():
        sweep = _sweep(overrides)
        jobs = math.prod(len(v) for v in sweep.values())
        assert jobs == PARTS[name] and re.search(rf"#   {name.split('/')[1]} .* {jobs} jobs\n", header), (name, jobs)
        if name.startswith("confirm/"):  # fresh seeds, one LR per arm, fixed from the lm study
            assert sweep["seed"] == [str(s) for s in range(5, 15)] and len(sweep["lr_mult"]) == 1
            fixed = [f"{k}={v[0]}" for k, v in sweep.items() if k not in ("task", "seed")]
            for task in sweep["task"]:
                cfg, lr, _ = _job([f"task={task}", *fixed])
                assert lr == CONFIRMED_LR[task, cfg.warmup.name] and (cfg.warmup.name == "none" or cfg.warmup.fraction == 0.1)
            confirm += jobs
            continue
        lm, bert = (lm + jobs, bert) if name.startswith("lm/") else (lm, bert + jobs)
        assert sweep["seed"] == ["0", "1", "2", "3", "4"]  # 5 seeds everywhere
        mults = [float(m) for m in sweep["lr_mult"]]
        if "_edge_" in name:  # one point a factor 2 below the grid
            assert mults == [0.125]
        else:
            assert all(b == 2 * a for a, b in zip(mults, mults[1:])) and len(mults) >= (5 if name.startswith("lm/") or "rmsprop" in name else 4)
        keys = [k for k in sweep if k not in ("seed", "lr_mult")]
        for combo in product(*(sweep[k] for k in keys)):
            job = [o if o.startswith("~") else f"{k}={o}" for k, o in zip(keys, combo)]
            cfg, lr, plan = _job([*job, f"lr_mult={mults[0]}"])
            assert cfg.train.steps == 1000 and cfg.decay.name == "linear" and cfg.task.depth >= 6 and plan.total_steps == 1000
            assert list(cfg.optimizer.get("betas") or []) == ([] if cfg.optimizer._target_.endswith("RMSprop") else [0.9, 0.99])
            warmup = cfg.warmup.name
            if warmup == "untuned_linear":
                assert plan.schedules["model"].warmup_steps == length_from_beta2(0.99, 2.0) == 200
            if warmup == "mean_matched":  # the control of the longest warm-up: the same mean LR, no warm-up
                task = cfg.task.name
                _, lr10, arm = _job([f"task={task}", "warmup=linear", "warmup.fraction=0.1", f"lr_mult={mults[0]}"])
                assert lr10 == lr and abs(plan.lr_mean - arm.lr_mean) < 1e-12 and plan.schedules["model"].warmup_steps == 0
                assert cfg.warmup.shape == "constant" and arm.schedules["model"].warmup_steps == 100
    assert (lm, bert, confirm) == (365, 190, 60) and "365 jobs" in header and "60 jobs" in header and "190 jobs" in header


def test_study_preset_alone_is_the_linear_part():
    params = _sweep([])
    assert params["task"] == ["lm_postln", "lm_preln"] and params["warmup.fraction"] == ["0.02", "0.05", "0.1"]
    cfg, lr, plan = _job(["task=lm_postln", "lr_mult=0.25"])
    assert cfg.warmup.name == "linear" and lr == 0.002 and plan.schedules["model"].warmup_steps == 50
    assert _job(["task=lm_preln", "lr_mult=4"])[1] == 0.064  # the Pre-LN grid sits a factor 2 higher
    assert json.dumps(params)  # plain strings: what the sweeper launches
