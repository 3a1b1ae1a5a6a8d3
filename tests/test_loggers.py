"""Loggers are plug-ins: every `logger` entry is built from its YAML and mirrors metrics.jsonl exactly."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from bench.errors import ConfigError
from bench.loggers import Loggers, RunContext, TensorBoardLogger, WandbLogger, build_loggers, logger_choice, sweep_group, varying_keys
from conftest import ROOT, bench_env, metrics, results, run_bench

CONF = ROOT / "conf"
SHORT = ["train.epochs=null", "train.steps=30", "train.eval_every=15", "hardware.threads=1"]


def _ctx(out_dir, choices=None, sweep_name=None) -> RunContext:
    return RunContext(out_dir=Path(out_dir), config={"seed": 0}, choices=choices or {"warmup": "linear"}, sweep_name=sweep_name,
                      job_name="warmup=linear", config_hash="c0ffee", multirun=sweep_name is not None)


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def tb_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as the TensorBoard UI reads them: its plugin accumulator, which drops
    the steps a restarted writer purges, and keeps every event (size guidance 0)."""
    ea = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    ea.Reload()
    tags = [t for t in ea.Tags()["tensors"] if ea.SummaryMetadata(t).plugin_data.plugin_name == "scalars"]
    return {t: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in ea.Tensors(t)] for t in tags}


def jsonl_scalars(job_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The same mapping built from metrics.jsonl: tag <kind>/<key>."""
    out: dict[str, list] = {}
    for row in metrics(job_dir):
        for k, v in row.items():
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(f"{row['kind']}/{k}", []).append((row["step"], v))
    return out


def test_options_contribute_named_entries_and_combine():
    assert OmegaConf.to_container(_compose().logger) == {}
    assert OmegaConf.to_container(_compose("logger=local").logger) == {}
    assert list(_compose("logger=wandb").logger) == ["wandb"]
    cfg = _compose("logger=[wandb,tensorboard]", "logger.wandb.project=x", "logger.tensorboard.dir=tb")
    assert list(cfg.logger) == ["wandb", "tensorboard"]
    assert cfg.logger.wandb.project == "x" and cfg.logger.tensorboard.dir == "tb"
    assert cfg.logger.wandb._target_ == "bench.loggers.WandbLogger" and cfg.logger.wandb._partial_ is True
    assert [logger_choice(_compose(f"logger={o}").logger) for o in ("local", "wandb", "[wandb,tensorboard]", "[local,tensorboard]")] == [
        "local", "wandb", "[wandb,tensorboard]", "tensorboard"]


def test_build_loggers_builds_each_entry_with_ctx(tmp_path):
    ctx = _ctx(tmp_path)
    built = build_loggers(_compose("logger=[wandb,tensorboard]", "logger.tensorboard.dir=tb").logger, ctx)
    assert [type(lg) for lg in built] == [WandbLogger, TensorBoardLogger]
    assert built[0].ctx is ctx and built[0].mode is None  # null: W&B's own mode, offline when nothing is set
    assert built[1].log_dir == tmp_path / "tb"
    assert build_loggers(_compose().logger, ctx) == []
    assert not any(tmp_path.iterdir())  # building opens nothing


@pytest.mark.parametrize("entry, key", [
    ({"t": {"_target_": "bench.loggers.TensorBoardLogger", "dir": "x", "flush_secs": 1}}, "logger.t._partial_"),
    ({"t": {"dir": "x"}}, "logger.t"),
    ({"t": 3}, "logger.t"),
    ({"t": {"_target_": "no_such_module.Logger", "_partial_": True}}, "logger.t"),
])
def test_malformed_entry_is_a_config_error_naming_its_key(tmp_path, entry, key):
    with pytest.raises(ConfigError, match=rf"^{key}[=:]"):
        build_loggers(OmegaConf.create(entry), _ctx(tmp_path))


def test_wandb_run_arguments(tmp_path, monkeypatch):
    import wandb

    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_NAME", "WANDB_JOB_TYPE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "no-settings"))
    seen = {}
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw))
    long = "x" * 80
    sweep = tmp_path / "sweep"
    (sweep / "3").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    ctx = RunContext(out_dir=sweep / "3", config={"seed": 0, "task": {"name": "digits"}}, sweep_name="sweep",
                     choices={"warmup": "linear", "batch": "linear", "experiment": "demo"}, job_name="warmup=linear",
                     config_hash="c0ffee", multirun=True)
    lg = WandbLogger(ctx=ctx, mode=None, project=None, entity=None, group=None, tags=[long])
    lg.open(None)
    assert seen["tags"] == ["warmup:linear", "batch:linear", "experiment:demo", "x" * 64]
    assert seen["group"] == sweep_group("demo", sweep) and seen["group"].startswith("demo-") and len(seen["group"]) == 11
    assert seen["mode"] == "offline" and seen["project"] == "warmup-bench" and seen["job_type"] == "digits"
    assert seen["name"] == "warmup=linear"  # outside a Hydra job: the job's own overrides
    assert seen["resume"] == "allow" and seen["id"].startswith("c0ffee-") and seen["dir"] == str(sweep.resolve())
    first = seen["id"]
    lg.open(None)
    assert seen["id"] == first  # the same job directory and config continue the same run

    monkeypatch.setenv("WANDB_MODE", "disabled")  # disabled: W&B is not started at all
    seen.clear()
    lg.open(None)
    assert seen == {} and lg.run is None
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_RUN_GROUP", "g-env")
    lg.open(None)
    assert seen["mode"] == "online" and seen["project"] is None and seen["group"] is None  # None: W&B reads its variables
    WandbLogger(ctx=ctx, mode="offline", project="p", entity=None, group="g", tags=[]).open(None)
    assert seen["mode"] == "offline" and seen["project"] == "p" and seen["group"] == "g"  # explicit values beat the environment


def test_varying_keys_of_a_sweep(tmp_path):
    f = tmp_path / "multirun.yaml"
    f.write_text("hydra:\n  sweeper:\n    params:\n      warmup: none,linear\n      seed: 0,1\n"
                 "  overrides:\n    task: ['optimizer.lr=0.1,0.3', train.steps=30, seed=0]\n")
    assert varying_keys(f) == ["warmup", "optimizer.lr"]  # seed=0 on the command line replaces the preset's list


def test_tensorboard_resume_purges_steps_logged_after_the_checkpoint(tmp_path):
    """A job killed after its checkpoint at step 5 had logged steps 5..7; the rerun logs 5..9 once."""
    first = Loggers(tmp_path, [TensorBoardLogger(ctx=_ctx(tmp_path), dir="tb", flush_secs=1)])
    first.open(None)
    for s in range(8):
        first.log({"kind": "train", "step": s, "loss": 100.0 + s})
        if s == 4:
            offset = first.offset()
    first.offset()  # flushed, then killed: no close
    second = Loggers(tmp_path, [TensorBoardLogger(ctx=_ctx(tmp_path), dir="tb", flush_secs=1)])
    second.open(offset)
    for s in range(5, 10):
        second.log({"kind": "train", "step": s, "loss": float(s)})
    second.close({"status": "completed", "steps": 10, "final": {"acc": 0.5}, "final_avg": {"acc": 0.25}})
    got = tb_scalars(tmp_path / "tb")
    assert got["train/loss"] == [(s, 100.0 + s) for s in range(5)] + [(s, float(s)) for s in range(5, 10)]
    assert got["final/acc"] == [(9, 0.5)] and got["final_avg/acc"] == [(9, 0.25)]  # the mean of the last evaluations too
    assert got["train/loss"] == jsonl_scalars(tmp_path)["train/loss"]


@pytest.mark.slow
def test_tensorboard_cli_run_equals_metrics_jsonl(tmp_path):
    p = run_bench(*SHORT, "logger=tensorboard", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "completed" and r["choices"]["logger"] == "tensorboard"
    got = tb_scalars(tmp_path / "tensorboard")
    want = jsonl_scalars(tmp_path)
    assert {"train/train_loss", "train/lr", "eval/val_acc"} <= want.keys()
    assert {t: v for t, v in got.items() if t in want} == want  # same steps, bit-equal values
    assert got["final/val_acc"] == [(29, r["final"]["val_acc"])]
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_sweep_over_logger_lists(tmp_path):
    """`-m` sweeps over lists of loggers. A key of a logger that the default (local) lacks needs `++`
    when the logger choice itself is swept: Hydra checks plain overrides against the default first."""
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "logger=[wandb,tensorboard],[tensorboard]", "++logger.tensorboard.dir=tb", f"hydra.sweep.dir={sweep}", "report=false")
    assert p.returncode == 0, p.stderr
    both, tb_only = results(sweep)
    assert both["choices"]["logger"] == "[wandb,tensorboard]" and tb_only["choices"]["logger"] == "tensorboard"
    for r in (both, tb_only):
        assert r["status"] == "completed"
        job = Path(r["output_dir"])
        assert tb_scalars(job / "tb")["eval/val_acc"] == jsonl_scalars(job)["eval/val_acc"]
    runs = list((sweep / "wandb").glob("offline-run-*"))  # one wandb/ per sweep: only the job with wandb wrote there
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "W&B wrote no offline run"
    assert not (Path(both["output_dir"]) / "wandb").exists() and not (Path(tb_only["output_dir"]) / "wandb").exists()


@pytest.mark.slow
def test_multirun_with_two_loggers_and_their_keys(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "logger=[wandb,tensorboard]", "logger.wandb.project=elsewhere", "logger.tensorboard.dir=tb", f"hydra.sweep.dir={sweep}", "report=false")
    assert p.returncode == 0, p.stderr
    (r,) = results(sweep)
    assert r["status"] == "completed" and r["config"]["logger"]["wandb"]["project"] == "elsewhere"
    job = Path(r["output_dir"])
    assert list((sweep / "wandb").glob("offline-run-*/run-*.wandb")) and list((job / "tb").glob("events.out.tfevents.*"))


PLUGIN = '''
import json
from pathlib import Path


class RowsLogger:
    """Copies every row to its own file and the final status to another: an outside logger."""

    def __init__(self, *, ctx, filename):
        self.path = Path(ctx.out_dir) / filename
        self.choices = ctx.choices

    def open(self, resume_offset):
        self.file = self.path.open("w")

    def log(self, row):
        self.file.write(json.dumps(dict(row)) + "\\n")

    def offset(self):
        self.file.flush()

    def close(self, result):
        self.file.close()
        (self.path.parent / "closed.json").write_text(json.dumps({"status": result["status"], "choices": self.choices}))
'''


@pytest.mark.slow
def test_outside_logger_plugin_needs_no_change_to_bench(tmp_path):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "rows_logger.py").write_text(PLUGIN)
    (tmp_path / "conf" / "logger").mkdir(parents=True)
    (tmp_path / "conf" / "logger" / "rows.yaml").write_text(textwrap.dedent("""\
        rows:
          _target_: rows_logger.RowsLogger
          _partial_: true
          filename: rows.jsonl
    """))
    job = tmp_path / "job"
    env = bench_env() | {"PYTHONPATH": str(tmp_path / "plug")}
    p = subprocess.run([sys.executable, "-m", "bench", *SHORT, "logger=[rows,tensorboard]", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                        f"hydra.run.dir={job}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (job / "rows.jsonl").read_text().splitlines()]
    assert rows == metrics(job)
    closed = json.loads((job / "closed.json").read_text())
    assert closed["status"] == "completed" and closed["choices"]["logger"] == "[rows,tensorboard]"
    assert (job / "tensorboard").is_dir()


@pytest.mark.slow
def test_preempted_and_resumed_run_logs_each_step_once_to_tensorboard(tmp_path):
    args = ["train.epochs=null", "train.steps=200", "train.log_every=1", "train.eval_every=50", "hardware.threads=1", "logger=tensorboard", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "metrics.jsonl.partial"
    for _ in range(6000):
        if partial.exists() and partial.read_text().count("\n") >= 60:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR2)
    proc.communicate(timeout=60)
    stopped = json.loads((tmp_path / "result.json").read_text())
    assert stopped["status"] == "preempted" and 60 <= stopped["steps"] < 200

    p = run_bench(*args)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "completed" and r["resumed_from"] == stopped["steps"]
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    got = tb_scalars(tmp_path / "tensorboard")
    assert [s for s, _ in got["train/train_loss"]] == list(range(200))  # none lost at the checkpoint, none twice
    assert {t: v for t, v in got.items() if not t.startswith("final/")} == jsonl_scalars(tmp_path)
