"""W&B as its users expect, checked offline by reading the run files back (W&B's own record protobufs)."""

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, bench_env, results

SHORT = ["train.steps=20", "train.eval_every=10", "hardware.threads=1"]


def wandb_records(run_dir: Path) -> list:
    """The records of an offline run's ``run-*.wandb`` file: W&B's 7-byte header, then LevelDB log
    framing (32 KiB blocks; each chunk: crc32, length, type 1=full, 2=first, 3=middle, 4=last) around
    ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, buf, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            records.append(rec)
            buf = b""
    return records


def run_record(run_dir: Path):
    return next(r.run for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "run")


def history_keys(run_dir: Path) -> set[str]:
    keys = set()
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in r.history.item}
    return keys


def run_bench(*args: str, env: dict) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` with the W&B environment ``env`` (conftest's run_bench pins WANDB_MODE)."""
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def env(**extra) -> dict:
    e = {k: v for k, v in bench_env().items() if not k.startswith("WANDB_")}
    return {**e, "WANDB_SILENT": "true", **extra}


@pytest.mark.slow
def test_sweep_lands_in_one_folder_with_group_names_and_a_summary_run(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "logger=wandb", "warmup=none,linear", "optimizer.lr=0.05", f"hydra.sweep.dir={sweep}", env=env(WANDB_CONFIG_DIR=str(tmp_path / "cfg")))  # no W&B settings: mode null = offline
    assert p.returncode == 0, p.stderr
    runs = sorted((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 3, runs  # two jobs and the summary, all in the sweep's one wandb/ folder
    recs = {run_record(r).display_name: (r, run_record(r)) for r in runs}
    jobs = [recs["warmup=none"][1], recs["warmup=linear"][1]]  # the name: only the override that varies
    (summary_dir, summary), = [v for k, v in recs.items() if k.startswith("summary")]
    groups = {j.run_group for j in jobs} | {summary.run_group}
    assert len(groups) == 1 and groups.pop().startswith("sweep-")  # <sweep dir name>-<sweep id>, the summary too
    assert [j.job_type for j in jobs] == ["digits", "digits"] and summary.job_type == "summary"
    assert "warmup:linear" in jobs[1].tags and "task:digits" in jobs[1].tags and jobs[0].project == "warmup-bench"
    assert {"train_loss", "val_acc"} <= history_keys(recs["warmup=linear"][0])
    keys = history_keys(summary_dir)
    assert {"table/summary/_type", "table/runs/_type", "table/best_lr/_type"} <= keys and any(k.startswith("figure/") for k in keys)
    assert list(summary_dir.glob("files/media/table/**/*.table.json")) and list(summary_dir.glob("files/media/images/**/*.png"))
    table = json.loads(next(summary_dir.glob("files/media/table/**/summary*.table.json")).read_text())
    assert len(table["data"]) == 2  # one row per cell of the report's summary: warmup none and linear
    assert not any((Path(r["output_dir"]) / "wandb").exists() for r in results(sweep))


@pytest.mark.slow
def test_wandb_mode_disabled_writes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "logger=wandb", "seed=0,1", f"hydra.sweep.dir={sweep}", env=env(WANDB_MODE="disabled"))
    assert p.returncode == 0, p.stderr
    assert [r["status"] for r in results(sweep)] == ["completed", "completed"]
    assert not list(sweep.rglob("wandb")) and "W&B" not in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, extra_env, says", [
    (["logger.wandb.mode=bogus"], {}, "W&B mode 'bogus' from logger.wandb.mode is not one of"),
    ([], {"WANDB_MODE": "bogus"}, "W&B mode 'bogus' from WANDB_MODE"),
    # online with an account but no server: the start times out after init_timeout, never W&B's 90 s
    (["logger.wandb.init_timeout=5"], {"WANDB_MODE": "online", "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"},
     "W&B could not start online"),
    ([], {"WANDB_MODE": "online", "HOME": "{tmp}"}, "W&B could not start online"),  # no API key at all (no ~/.netrc)
])
def test_wandb_failing_to_start_never_stops_training(tmp_path, args, extra_env, says):
    extra_env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in extra_env.items()}
    t0 = time.perf_counter()
    p = run_bench(*SHORT, "logger=wandb", *args, f"hydra.run.dir={tmp_path}", env=env(WANDB_CONFIG_DIR=str(tmp_path / "cfg"), **extra_env))
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"
    lines = [ln for ln in p.stderr.splitlines() if "W&B" in ln]
    assert len(lines) == 1 and says in lines[0], p.stderr  # said once, in one line
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")), "no offline fallback run"
    assert wall < 90, f"{wall:.0f} s: the failed start was not cut short"
