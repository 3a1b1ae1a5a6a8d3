"""Every bad input is refused at start-up: one `error:` line naming key and value, exit 2, no record."""

import json

import pytest

from conftest import run_bench

pytestmark = pytest.mark.slow

CASES = [
    (["optimizer.lr=-1"], "optimizer.lr=-1"),
    (["optimizer.lr=0"], "optimizer.lr=0"),
    (["optimizer.lr=fast"], "optimizer.lr='fast'"),
    (["batch.size=0"], "batch.size=0"),
    (["batch.size=64", "batch.micro_size=48"], "batch.micro_size=48"),
    (["batch.scaling=cubic"], "batch.scaling='cubic'"),
    (["warmup=linear", "warmup.steps=5000", "train.epochs=null", "train.steps=100"], "longer than the training budget of 100 steps"),
    (["train.epochs=null", "train.steps=0"], "train.steps=0"),
    (["train.epochs=-2"], "train.epochs=-2"),
    (["train.epochs=3", "train.steps=100"], "set at most one"),
    (["warmup=linear", "warmup.steps=10", "warmup.fraction=0.1"], "set at most one of warmup.steps"),
    (["warmup=untuned_linear", "optimizer=sgd"], "needs an optimizer with betas"),
    (["warmup=untuned_exponential", "optimizer=lars"], "needs an optimizer with betas"),
    (["warmup=linear", "warmup.start_factor=0"], "warmup.start_factor=0"),
    (["warmup=linear", "warmup.start_factor=1.5"], "warmup.start_factor=1.5"),
    (["warmup=constant", "warmup.start_factor=2"], "warmup.start_factor=2"),
    (["hardware=gpu"], "hardware.device='cuda'"),
    (["batch.size=5000"], "batch.size=5000"),
    # issue 11 defect 7: each refused before any record, not after result.json exists or with a traceback
    (["+optimizer.nesterov_typo=true"], "optimizer (torch.optim.SGD) refused its arguments: TypeError"),
    (["optimizer.momentum=-0.5"], "Invalid momentum value: -0.5"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"], "Invalid beta parameter at index 1: 1.5"),
    (["seed=-1"], "seed=-1 is not allowed: an integer in [0, 2^63)"),
    (["seed=9223372036854775808"], "seed=9223372036854775808 is not allowed"),
    (["decay=step", "decay.milestones=0.5"], "decay.milestones=0.5"),
    (["task.hidden=-1"], "task.hidden=-1 is not allowed: an integer >= 1"),
    (["task.norm=batchnorm"], "task.norm='batchnorm' is not allowed: one of none, batch"),
    (["hardware.deterministic=maybe"], "hardware.deterministic='maybe' is not allowed: true or false"),
    (["hardware.compile=1"], "hardware.compile=1 is not allowed: true or false"),
    (["batch=linear", "batch.size=1024", "batch.base_size=1", "optimizer.lr=1e308"], "optimizer.lr=1e+308 is not allowed: a base LR whose scaled peak"),
    (["warmup=none", "warmup.steps=500"], "warmup.steps=500 is not allowed: null with warmup=none"),
    (["warmup.fraction=0.1"], "warmup.fraction=0.1 is not allowed: null with warmup=none"),  # warmup=none is the default
    (["warmup=mean_matched", "warmup.shape=triangle"], "warmup.shape='triangle' is not allowed: one of constant, decay"),
    (["warmup=mean_matched", "warmup.reference.fraction=0"], "warmup.reference.fraction=0 is not allowed: a number in (0, 1]"),
    (["warmup=mean_matched", "warmup.steps=10"], "warmup.steps=10 is not allowed: null: warmup=mean_matched has no warm-up"),
]


def assert_refused(p, run_dir, needle):
    """Exit 2, one ``error:`` line holding ``needle``, and nothing left in the run dir: no record, no .hydra/, no log."""
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert needle in lines[0], lines[0]
    assert not run_dir.exists() or not any(run_dir.iterdir()), sorted(x.name for x in run_dir.iterdir())


@pytest.mark.parametrize("overrides,needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_refused_at_start_up(tmp_path, overrides, needle):
    run_dir = tmp_path / "run"
    p = run_bench(*overrides, "hardware.threads=1", f"hydra.run.dir={run_dir}")
    assert_refused(p, run_dir, needle)


def test_binary_corpus_is_refused_naming_task_corpus_path(tmp_path):
    blob = tmp_path / "weights.txt"
    blob.write_bytes(bytes(range(256)) * 4)  # a binary file under a text name
    run_dir = tmp_path / "run"
    p = run_bench("task=lm_postln", "task.corpus.source=text", f"task.corpus.path={blob}", f"hydra.run.dir={run_dir}")
    assert_refused(p, run_dir, f"task.corpus.path='{blob}' is not allowed: UTF-8 text; weights.txt: it holds a NUL byte at offset 0")


def test_corpus_not_utf8_past_its_first_kilobytes_is_refused_when_read(tmp_path):
    """The start-up sniff reads 8 KB; a bad byte later is found by the read, still one line and nothing left behind."""
    late = tmp_path / "late.txt"
    late.write_bytes(b"plain words " * 1000 + b"\xff")
    run_dir = tmp_path / "run"
    p = run_bench("task=lm_postln", "task.corpus.source=text", f"task.corpus.path={late}", "hardware.threads=1", f"hydra.run.dir={run_dir}")
    assert_refused(p, run_dir, "task.corpus.path=")
    assert "late.txt: byte 12000 is not UTF-8" in p.stderr


def test_a_refusal_keeps_what_an_earlier_run_left_in_the_run_dir(tmp_path):
    """Only what this refused run wrote is removed: never a record or file an earlier run left there."""
    late = tmp_path / "late.txt"
    late.write_bytes(b"plain words " * 1000 + b"\xff")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_text('{"status": "completed"}')
    p = run_bench("task=lm_postln", "task.corpus.source=text", f"task.corpus.path={late}", "hardware.threads=1", f"hydra.run.dir={run_dir}")
    assert p.returncode == 2, p.stderr
    assert (run_dir / "result.json").read_text() == '{"status": "completed"}'


def test_unwritable_run_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    p = run_bench(f"hydra.run.dir={blocker}/run")
    assert_refused(p, blocker / "run", f"hydra.run.dir='{blocker}/run' is not allowed: a directory this user can create and write")


def test_warmup_none_takes_a_length_from_a_sweep(tmp_path):
    """The rule's other half: a sweep comparing warm-ups shares one length, and warmup=none ignores it."""
    sweep = tmp_path / "s"
    p = run_bench("-m", "warmup=none,linear", "warmup.steps=3", "train.epochs=null", "train.steps=5", "hardware.threads=1", "report=false", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    steps = [json.loads((sweep / str(i) / "result.json").read_text())["warmup_steps"]["model"] for i in range(2)]
    assert steps == [0, 3]


def test_unknown_group_option_lists_choices(tmp_path):
    p = run_bench("warmup=cosine", f"hydra.run.dir={tmp_path}")
    assert p.returncode != 0
    assert "Could not find 'warmup/cosine'" in p.stderr
    assert "linear" in p.stderr and "untuned_linear" in p.stderr  # Hydra lists the available options
