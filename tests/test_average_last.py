"""train.average_last: each evaluation metric's mean over a run's last K evaluations (result.json's final_avg),
the test split scored at the same steps (test_avg), and the status judged on the averaged block."""

from __future__ import annotations

import json
import math

import pytest

from bench import run
from bench.errors import ConfigError
from bench.loop import evaluation_steps
from bench.records import config_hash, mean_of_evaluations
from tasks.digits import DigitsTask

ONE = "hardware.threads=1"
FAST = ["train.steps=40", "train.eval_every=5", "train.log_every=10", ONE]  # evaluations after steps 4, 9, ..., 39: eight


class CountingTask(DigitsTask):
    """Digits whose evaluations return known values: the n-th validation evaluation gives val_loss = n and
    val_acc = n / 100, the n-th test evaluation val_loss = 100 + n (recorded as test_loss)."""

    def __init__(self, cfg, seed, device):
        super().__init__(cfg, seed, device)
        self.calls = {"val": 0, "test": 0}

    def evaluate(self, split: str = "val") -> dict[str, float]:
        if split not in self.calls:
            return super().evaluate(split)
        self.calls[split] += 1
        n = self.calls[split]
        return {"val_acc": n / 100, "val_loss": float(n + (100 if split == "test" else 0))}


COUNTING = f"task._target_={__name__}.CountingTask"


def test_mean_of_evaluations_by_hand():
    assert mean_of_evaluations([{"fd": 19.0, "classes": 10}, {"fd": 112.0, "classes": 9}]) == {"fd": 65.5, "classes": 9.5}
    assert mean_of_evaluations([{"a": 1.0}, {"a": 2.0, "b": 4.0}]) == {"a": 1.5, "b": 4.0}  # each key over the rows that have it
    assert math.isnan(mean_of_evaluations([{"a": 1.0}, {"a": math.nan}])["a"])  # a broken evaluation is not averaged away
    assert mean_of_evaluations([]) == {}


def test_evaluation_steps_match_the_loop_rule():
    assert evaluation_steps(250, 100) == [99, 199, 249]  # the last step is always evaluated
    assert evaluation_steps(200, 100) == [99, 199]
    assert evaluation_steps(50, 100) == [49]
    assert evaluation_steps(40, 5)[-3:] == [29, 34, 39]


def test_bad_value_is_refused_and_null_keeps_the_old_hash(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.average_last=0"):
        run(["train.average_last=0", *FAST], output_dir=tmp_path / "bad")
    base = {"seed": 0, "train": {"steps": 10}}
    # records made before the key existed keep their hash (a resumed sweep still skips them); a value is a new run
    assert config_hash({"seed": 0, "train": {"steps": 10, "average_last": None}}) == config_hash(base)
    assert config_hash({"seed": 0, "train": {"steps": 10, "average_last": 5}}) != config_hash(base)


@pytest.mark.slow
def test_the_last_k_evaluations_are_averaged(tmp_path):
    r = run([COUNTING, "train.average_last=3", *FAST], output_dir=tmp_path / "a")
    assert r["status"] == "completed" and r["metric_block"] == "final_avg" and r["average_last"] == 3
    assert r["final"] == {"val_acc": 0.08, "val_loss": 8.0}  # the eighth evaluation
    assert r["final_avg_steps"] == [29, 34, 39]
    assert r["final_avg"] == {"val_acc": pytest.approx(0.07), "val_loss": pytest.approx(7.0)}  # (6 + 7 + 8) / 3
    # the test split is scored at the same three steps (its 1st to 3rd evaluations), then once more for `test`
    assert r["test_avg"] == {"test_acc": pytest.approx(0.02), "test_loss": pytest.approx(102.0)}
    assert r["test"] == {"test_acc": 0.04, "test_loss": 104.0}
    eval_rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [x["val_loss"] for x in eval_rows] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # the rows are the same as without averaging


@pytest.mark.slow
def test_a_run_with_fewer_evaluations_averages_what_it_has(tmp_path, caplog):
    r = run([COUNTING, "train.average_last=20", *FAST], output_dir=tmp_path / "a")
    assert r["final_avg_steps"] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert r["final_avg"]["val_loss"] == pytest.approx(4.5)  # mean of 1..8
    assert r["test_avg"]["test_loss"] == pytest.approx(104.5)
    assert "mean of the last 8 evaluations (train.average_last=20: the run has only 8)" in caplog.text


@pytest.mark.slow
def test_off_by_default(tmp_path):
    r = run([COUNTING, *FAST], output_dir=tmp_path / "a")
    assert r["metric_block"] == "final" and r["average_last"] is None
    assert "final_avg" not in r and "test_avg" not in r
    assert r["test"] == {"test_acc": 0.01, "test_loss": 101.0}  # no test evaluation during training
