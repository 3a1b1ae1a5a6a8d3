"""bench.report on hand-made records: cells, intervals, diverged counts, the alpha fit, bad input."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import report as rep
from conftest import ROOT, bench_env


def record(i: int, *, warmup="none", batch=64, lr=0.1, seed=0, acc=0.9, status="completed", optimizer="sgd", scaling="none", base=64) -> dict:
    """A minimal result.json as bench.app writes it (only the keys the report reads)."""
    peak = lr * (batch / base if scaling == "linear" else 1.0)
    return {
        "schema": 1,
        "status": status,
        "task": "digits",
        "choices": {"task": "digits", "optimizer": optimizer, "warmup": warmup, "batch": scaling, "schedule": "constant", "logger": "local", "hardware": "cpu"},
        "overrides": [f"warmup={warmup}", f"batch.size={batch}", f"optimizer.lr={lr}", f"seed={seed}", f"optimizer={optimizer}"],
        "seed": seed,
        "batch_size": batch,
        "base_batch_size": base,
        "scaling": scaling,
        "lr_base": lr,
        "lr_scale": peak / lr,
        "lr_peak": peak,
        "warmup": warmup,
        "warmup_steps": {"model": 0 if warmup == "none" else 5},
        "schedule": "constant",
        "steps_planned": 100,
        "primary_metric": "val_acc",
        "metric_modes": {"val_acc": "max", "val_loss": "min"},
        "config": {"seed": seed, "optimizer": {"lr": lr}, "batch": {"size": batch}, "warmup": {"name": warmup}},
        "env": {"git_commit": "abc123", "git_dirty": False, "device": "cpu", "device_name": "x86_64", "cpu_count": 2, "torch_threads": 1, "host": "h", "torch": "2"},
        "started": f"2026-01-01T00:00:{i % 60:02d}+00:00",
        "ended": f"2026-01-01T00:01:{i % 60:02d}+00:00",
        "steps": 100 if status != "diverged" else 7,
        "diverged_step": 6 if status == "diverged" else None,
        "final": {} if status == "diverged" else {"val_acc": acc, "val_loss": 1 - acc},
        "best": {} if status == "diverged" else {"val_acc": acc, "val_loss": 1 - acc},
        "final_train_loss": 0.1,
        "wall_time_s": 2.0,
    }


def write_sweep(root: Path, records: list[dict]) -> Path:
    for i, r in enumerate(records):
        d = root / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
        rows = [{"kind": "train", "step": s, "lr": r["lr_peak"], "train_loss": 2.0 / (s + 1)} for s in range(0, 100, 10)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return root


@contextmanager
def saved_figures():
    """The matplotlib figures saved inside the block, in order (each still saved to its file)."""
    from bench import report_plots

    grabbed, orig = [], report_plots.plt.Figure.savefig

    def grab(fig, *a, **k):
        grabbed.append(fig)
        return orig(fig, *a, **k)

    report_plots.plt.Figure.savefig = grab
    try:
        yield grabbed
    finally:
        report_plots.plt.Figure.savefig = orig


def small_sweep(root: Path) -> Path:
    """2 warm-ups x 2 LRs x 1 batch x 3 seeds; warmup=none at lr=1.0 has one diverged seed."""
    recs = []
    accs = {("none", 0.1): [0.90, 0.92, 0.94], ("none", 1.0): [0.50, 0.60, None], ("linear", 0.1): [0.91, 0.93, 0.95], ("linear", 1.0): [0.96, 0.97, 0.98]}
    for (w, lr), vals in accs.items():
        for seed, a in enumerate(vals):
            recs.append(record(len(recs), warmup=w, lr=lr, seed=seed, acc=a if a is not None else 0.0, status="completed" if a is not None else "diverged"))
    return write_sweep(root, recs)


def test_cells_means_intervals_and_diverged_counts(tmp_path):
    res = rep.report(small_sweep(tmp_path / "sweep"), tmp_path / "out")
    s = pd.read_csv(tmp_path / "out" / "summary.csv").set_index(["warmup", "lr_base"])
    assert len(s) == 4
    assert s.loc[("none", 0.1), "mean"] == pytest.approx(0.92)
    assert s.loc[("linear", 1.0), "mean"] == pytest.approx(0.97)
    # the diverged seed is counted, not averaged: mean of the two finished runs
    assert s.loc[("none", 1.0), "n_runs"] == 3
    assert s.loc[("none", 1.0), "n_diverged"] == 1
    assert s.loc[("none", 1.0), "mean"] == pytest.approx(0.55)
    assert not s.loc[("none", 1.0), "eligible"]
    # three values: mean -/+ t_{0.975,2} s / sqrt(3), s = 0.02
    lo, hi = s.loc[("none", 0.1), ["ci_low", "ci_high"]]
    assert (lo, hi) == pytest.approx((0.92 - 4.302652729911275 * 0.02 / math.sqrt(3), 0.92 + 4.302652729911275 * 0.02 / math.sqrt(3)))
    assert s.loc[("none", 0.1), "interval"] == "t"
    # success rate over finished runs with its exact interval: 2/3 -> [0.0943, 0.9916]
    c = s.loc[("none", 1.0)]
    assert (c["n_success"], c["n_finished"], c["success_rate"]) == (2, 3, pytest.approx(2 / 3))
    assert (c["success_lo"], c["success_hi"]) == pytest.approx((0.094299, 0.991596), abs=1e-6)
    assert math.isnan(c["chance_mean"])  # these records carry no chance value: not computable
    # best LR: warmup=none cannot pick lr=1.0 (a diverged seed), linear picks it and it is on the grid edge
    b = res["best"].set_index("warmup")
    assert b.loc["none", "lr_base"] == 0.1 and b.loc["none", "edge"] == "low"
    assert b.loc["linear", "lr_base"] == 1.0 and b.loc["linear", "edge"] == "high"
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(runs) == 12 and (runs["status"] == "diverged").sum() == 1
    assert math.isnan(runs.loc[runs["status"] == "diverged", "metric"].iloc[0])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "abc123" in readme and "12 (11 completed, 1 diverged)" in readme
    assert "edge of the grid" in readme
    md = (tmp_path / "out" / "table.md").read_text()
    assert "0.92 [" in md and "1†" in md and "2/3 = 0.67 [0.094, 0.99]" in md
    assert "optimizer.lr (lr_base, at batch.base_size=64)" in md and "batch.size" in md
    assert md.count("test metrics missing: validation numbers shown") == 3  # cells, best LR, warm-up effect
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert r"\toprule" in tex and r"1\textsuperscript{\dag}" in tex and r"optimizer.lr (lr\_base, at batch.base\_size=64)" in tex
    assert "failures scored at chance: not computable for 1 of 4 cells" in readme
    for name in ("heatmap", "warmup_comparison", "divergence", "curves"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_alpha_fit_recovers_a_known_exponent(tmp_path, alpha):
    """Accuracy peaks at lr* = 0.01 * (B/16)^alpha; the LR grid holds every lr* exactly."""
    recs = []
    batches = [16, 64, 256, 1024]
    grid = [0.01 * 2.0**k for k in range(-2, 13)]
    rng = np.random.default_rng(1)
    for b in batches:
        best = 0.01 * (b / 16) ** alpha
        for lr in grid:
            for seed in range(3):
                acc = 0.95 - 0.05 * math.log2(lr / best) ** 2 + rng.normal(0, 0.002)
                recs.append(record(len(recs), batch=b, lr=lr, seed=seed, acc=acc))
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=alpha == 0.5)
    a = res["alpha"].iloc[0]
    assert a["alpha"] == pytest.approx(alpha, abs=0.01)  # lr_star: a parabola in log LR through noisy means
    assert a["alpha_low"] <= alpha <= a["alpha_high"]
    assert a["n_batch_sizes"] == 4
    assert rep.fit_alpha([16, 64], [0.1, 0.2]) == pytest.approx((0.5, 0.1 / 4))
    assert (tmp_path / "out" / "lr_vs_batch.png").exists() == (alpha == 0.5)


def test_corrupt_partial_and_missing_records_are_skipped_and_named(tmp_path):
    root = small_sweep(tmp_path / "sweep")
    (root / "0" / "result.json").write_text('{"status": "compl')  # half-written
    (root / "1" / "result.json").write_text("[1, 2]")  # not a record
    (root / "20" / ".hydra").mkdir(parents=True)  # a job that never wrote a record
    running = record(99, warmup="linear", lr=0.1, seed=7)
    running.update(status="running", final=None, best=None)
    nested = root / "inner" / ".submitit" / "0"  # submitit layout inside a nested sweep
    nested.mkdir(parents=True)
    (nested / "result.json").write_text(json.dumps(running))
    res = rep.report(root, tmp_path / "out", figures=False)
    text = "\n".join(res["warnings"])
    assert str(root / "0" / "result.json") in text and str(root / "1" / "result.json") in text
    assert str(root / "20") in text and "never finished" in text and str(nested) in text
    s = res["summary"].set_index(["warmup", "lr_base"])
    assert s.loc[("linear", 0.1), "n_runs"] == 4 and s.loc[("linear", 0.1), "n_unfinished"] == 1
    assert s.loc[("linear", 0.1), "mean"] == pytest.approx(0.93)  # the running job adds no value
    assert s.loc[("none", 0.1), "n_runs"] == 1  # two of its three records were unreadable
    assert "half-written" in (tmp_path / "out" / "README.md").read_text()


def test_metric_option_and_lower_is_better(tmp_path):
    res = rep.report(small_sweep(tmp_path / "sweep"), tmp_path / "out", metric="val_loss", figures=False)
    b = res["best"].set_index("warmup")
    assert b.loc["linear", "mean"] == pytest.approx(0.03)  # val_loss = 1 - acc, minimised
    assert res["summary"]["mode"].eq("min").all()


def test_lr_multiplier_key_does_not_split_cells(tmp_path):
    recs = []
    for opt, ref in (("sgd", 0.1), ("adam", 0.001)):
        for m in (0.5, 1.0, 2.0):
            r = record(len(recs), lr=ref * m, optimizer=opt, acc=0.9 - abs(math.log2(m)) * 0.1)
            r["overrides"].append(f"lr_mult={m}")
            r["config"]["lr_mult"] = m
            recs.append(r)
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    assert "lr_mult" not in res["summary"].columns
    assert sorted(res["best"]["lr_base"]) == [0.001, 0.1]


def test_a_per_part_lookup_key_gives_way_to_the_keys_that_name_the_parts(tmp_path):
    """Parts of one study differ in a few-valued key (train.steps) and in a per-part table (lr_centre): the readable
    key stays as the column and the table is dropped, whichever comes first alphabetically."""
    recs = []
    for scaling, steps, centre in (("sqrt", 100, '{"64": 2}'), ("sqrt", 400, '{"64": 4}'), ("none", 100, '{"64": 8}')):
        for lr in (0.1, 0.2):
            for seed in (0, 1):
                r = record(len(recs), lr=lr, seed=seed, acc=0.9 + lr / 10, scaling=scaling)
                r["overrides"] += [f"train.steps={steps}", f"lr_centre={centre}"]
                r["config"] |= {"train": {"steps": steps}, "lr_centre": json.loads(centre)}
                recs.append(r)
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    assert {"batch", "train.steps"} <= set(res["summary"].columns) and "lr_centre" not in res["summary"].columns
    assert len(res["best"]) == 3


def test_of_two_keys_that_fix_each_other_the_one_that_names_the_model_stays(tmp_path):
    """A ResNet trained 2 epochs and an MLP trained 3: task.model and train.epochs fix each other, and the column
    kept is task.model (it would be train.epochs by alphabetical order, as before)."""
    recs = []
    for model, epochs in (("mlp", 3), ("resnet", 2)):
        for seed in (0, 1):
            r = record(len(recs), seed=seed, acc=0.9)
            r["overrides"] += [f"task.model={model}", f"train.epochs={epochs}"]
            r["config"] |= {"task": {"model": model}, "train": {"epochs": epochs}}
            recs.append(r)
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    assert "task.model" in res["summary"].columns and "train.epochs" not in res["summary"].columns


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bench.report", *map(str, args)], cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # five runs of the report CLI in a subprocess
def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    norecords = tmp_path / "norecords"
    (norecords / "0").mkdir(parents=True)
    (norecords / "0" / "notes.txt").write_text("x")
    cases = [(tmp_path / "missing", "not a directory"), (empty, "empty directory"), (norecords, "no readable result.json")]
    for path, words in cases:
        p = _cli(path)
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith("error: ") and words in p.stderr and p.stderr.count("\n") == 1
    sweep = small_sweep(tmp_path / "sweep")
    p = _cli(sweep, "--metric", "bleu")
    assert p.returncode == 2 and "--metric='bleu'" in p.stderr and "val_acc" in p.stderr and p.stderr.count("\n") == 1
    p = _cli(sweep, "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert "Best LR per group" in p.stdout and str(tmp_path / "o" / "heatmap.png") in p.stdout


# ---------------------------------------------------------------- declared outcomes


def test_statuses_come_from_the_records_declared_outcomes(tmp_path):
    """A task status the harness has never heard of ('shaky', a success; 'stalled', a failure) is counted
    from the records' ``outcomes``; old records without the key fall back to completed/collapsed."""
    recs = []
    for seed, status in enumerate(["completed", "shaky", "stalled", "diverged", "failed"]):
        r = record(seed, lr=0.1, seed=seed, acc=0.8 + 0.01 * seed, status=status)
        r.update(outcomes={"completed": True, "shaky": True, "stalled": False}, success=status in ("completed", "shaky"))
        if status == "failed":
            r.update(final=None, best=None)
        recs.append(r)
    for seed in range(2):  # a second LR, all completed: the only eligible cell
        r = record(10 + seed, lr=0.3, seed=seed, acc=0.7)
        r.update(outcomes={"completed": True, "shaky": True, "stalled": False}, success=True)
        recs.append(r)
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    s = res["summary"].set_index("lr_base")
    assert [c for c in s.columns if c.startswith("n_")] == ["n_runs", "n_completed", "n_diverged", "n_shaky", "n_stalled", "n_unfinished", "n_success", "n_finished"]
    c = s.loc[0.1]
    assert (c["n_runs"], c["n_completed"], c["n_diverged"], c["n_shaky"], c["n_stalled"], c["n_unfinished"], c["n_success"], c["n_finished"]) == (5, 1, 1, 1, 1, 1, 2, 4)
    assert c["mean"] == pytest.approx((0.80 + 0.81) / 2)  # over the successes: completed and shaky (stalled trained to the end but failed)
    assert c["success_rate"] == 0.5  # the failed (crashed) job is outside the rate
    assert not c["eligible"] and s.loc[0.3, "eligible"]
    assert res["best"]["lr_base"].iloc[0] == 0.3
    assert any("never finished (status failed" in w for w in res["warnings"])
    md = (tmp_path / "out" / "table.md").read_text()
    assert "failures at chance [95%] | diverged | stalled | unfinished |" in md  # a column per status that is not a success
    # the same sweep as old schema-1 records: no outcomes key, so the documented fallback applies
    old = [dict(r) for r in recs if r["status"] in ("completed", "diverged")]
    for r in old:
        del r["outcomes"], r["success"]
    old[0]["status"] = "collapsed"
    res = rep.report(write_sweep(tmp_path / "old", old), tmp_path / "out_old", figures=False)
    s = res["summary"].set_index("lr_base")
    assert s.loc[0.1, "n_collapsed"] == 1 and s.loc[0.1, "n_success"] == 0 and "n_shaky" not in s.columns


def test_records_helpers_for_the_harness():
    from bench import records

    gan = {"status": "collapsed", "outcomes": records.declared_outcomes({"collapsed": False})}
    assert gan["outcomes"] == {"completed": True, "stalled": False, "collapsed": False}
    assert records.finished_statuses(gan) == {"diverged", "completed", "stalled", "collapsed"}
    assert records.measured(gan) and not records.succeeded(gan)
    assert not records.measured({"status": "diverged", "outcomes": {"completed": True}})
    assert not records.measured({"status": "running", "outcomes": {"completed": True}})
    assert records.finished_statuses({"status": "completed"}) == {"diverged", "completed", "collapsed"}  # schema 1 fallback
    assert records.succeeded({"status": "completed"}) and not records.succeeded({"status": "failed"})


# ---------------------------------------------------------------- LaTeX


SPECIALS = r"a_b%c&d#e$f^g~h{i}j\k"
ESCAPED = r"a\_b\%c\&d\#e\$f\textasciicircum{}g\textasciitilde{}h\{i\}j\textbackslash{}k"


def _special_tables():
    return [("title with _ and %", ["name " + SPECIALS, "value"], [[SPECIALS, "0.5 [0.4, 0.6]"], ["x", "–"], ["y", "12†"]])]


def test_latex_escapes_every_special_and_right_aligns_numbers(tmp_path):
    assert rep.tex_escape(SPECIALS) == ESCAPED
    rep.write_latex(tmp_path / "t.tex", _special_tables())
    tex = (tmp_path / "t.tex").read_text()
    assert r"\begin{tabular}{lr}" in tex and r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert f"name {ESCAPED} & value \\\\" in tex
    assert f"{ESCAPED} & 0.5 [0.4, 0.6] \\\\" in tex and r"y & 12\textsuperscript{\dag} \\" in tex
    assert "% title with \\_ and \\%" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed: the compile check needs it (the escape test above runs anyway)")
def test_latex_tables_compile(tmp_path):
    rep.report(small_sweep(tmp_path / "sweep"), tmp_path / "out", figures=False)
    rep.write_latex(tmp_path / "special.tex", _special_tables())
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{out/table.tex}\n\\input{special.tex}\n\\end{document}\n"
    (tmp_path / "doc.tex").write_text(doc)
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


# ---------------------------------------------------------------- figures and terminal


def test_colour_scale_is_fixed_per_metric_not_stretched_to_the_data(tmp_path):
    from bench import report_plots

    low = [0.50, 0.52, 0.55]
    high = [0.90, 0.95, 0.99]
    for metric in ("val_acc", "val_loss", "fd"):
        a, b = report_plots.color_norm(metric, low), report_plots.color_norm(metric, high)
        assert (a.vmin, a.vmax) == (b.vmin, b.vmax) == report_plots.SCALES[metric][:2]
    assert (report_plots.color_norm("val_acc").vmin, report_plots.color_norm("val_acc").vmax) == (0.0, 1.0)
    # an unlisted metric: 0-1 for fractions, else decades around the values (documented fallback)
    assert (report_plots.color_norm("new_frac", low).vmin, report_plots.color_norm("new_frac", low).vmax) == (0.0, 1.0)
    wide = report_plots.color_norm("new_loss", [3.0, 400.0])
    assert (wide.vmin, wide.vmax) == (1.0, 1000.0)
    assert report_plots.color_norm("modes", [0.9, 6.8]).vmin == 0.0  # a count: linear from 0
    # two real reports with different data ranges draw their heat maps on the same scale
    ranges = []
    for name, accs in (("lo", low), ("hi", high)):
        recs = [record(i, lr=lr, seed=s, acc=a) for i, (lr, a) in enumerate(zip((0.1, 0.3, 1.0), accs)) for s in range(2)]
        rep.report(write_sweep(tmp_path / name, recs), tmp_path / f"out_{name}", figures=True)
        fig_norms = []
        orig = report_plots.plt.Figure.savefig

        def grab(fig, *a, **k):
            fig_norms.extend((im.norm.vmin, im.norm.vmax) for ax in fig.axes for im in ax.images)
            return orig(fig, *a, **k)

        report_plots.plt.Figure.savefig = grab
        try:
            sw = rep.load(tmp_path / name)
            summary = rep.summarize(sw)
            report_plots.heatmap(sw, summary, rep.best_lr(sw, summary), tmp_path / f"h_{name}.png")
        finally:
            report_plots.plt.Figure.savefig = orig
        ranges.append(set(fig_norms))
    assert ranges[0] == ranges[1] == {(0.0, 1.0)}


def test_multi_model_curves_and_single_batch_heatmap(tmp_path):
    """A GAN-like sweep (train_loss/<model>, lr/<model>) of one batch size: per-model loss panels; one LR x warm-up map."""
    from bench import report_plots

    recs = [record(i, warmup=w, lr=lr, seed=s) for i, (w, lr, s) in enumerate((w, lr, s) for w in ("none", "linear") for lr in (0.1, 1.0) for s in range(2))]
    root = tmp_path / "sweep"
    write_sweep(root, recs)
    for d in sorted(p for p in root.iterdir()):
        rows = [{"kind": "train", "step": s, "lr/discriminator": 0.1, "lr/generator": 0.05, "train_loss/discriminator": 1.0, "train_loss/generator": 2.0, "train_loss": 3.0} for s in range(0, 100, 10)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    sw = rep.load(root)
    summary = rep.summarize(sw)
    with saved_figures() as grabbed:
        report_plots.curves_figure(sw, summary, tmp_path / "c.png", rep.curves)
        report_plots.heatmap(sw, summary, rep.best_lr(sw, summary), tmp_path / "h.png")
    curves, heat = grabbed
    titles = [ax.get_title() for ax in curves.axes]
    assert titles[0].startswith("discriminator:") and titles[1].startswith("generator:") and len(titles) == 3
    assert [t.get_text() for t in curves.axes[2].get_legend().get_texts()] == ["discriminator", "generator"]
    assert all(line.get_drawstyle() == "steps-post" for line in curves.axes[2].lines)
    # the runs' legend sits below the panels, not over the loss curves
    (runs_legend,) = curves.legends
    assert curves.axes[0].get_legend() is None and runs_legend.get_title().get_text().startswith("run (colour")
    curves.canvas.draw()
    box, panel = runs_legend.get_window_extent(), curves.axes[0].get_window_extent()
    assert box.y1 <= panel.y0 and len(runs_legend.get_texts()) == 2
    maps = [ax for ax in heat.axes if ax.images]
    assert len(maps) == 1 and [t.get_text() for t in maps[0].get_xticklabels()] == ["none", "linear"]
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_cli_prints_warnings_on_stderr(tmp_path):
    p = _cli(small_sweep(tmp_path / "sweep"), "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert "warning: best LR on the high edge of the grid" in p.stderr
    assert "warning: 4 of 4 cells have fewer than 5 seeds (min 3)" in p.stderr  # three seeds per cell here
    assert "warning:" not in p.stdout


# ---------------------------------------------------------------- content the report must survive

MALFORMED = [
    ("lr_base", "0.1", "lr_base=\"0.1\" is not a finite number"),
    ("batch_size", None, "batch_size is null"),
    ("task", ["digits"], "task=[\"digits\"] is not a task name"),
    ("metric_modes", {"val_acc": "up"}, "metric_modes="),
    ("final", {"val_acc": "high"}, "final="),
    ("overrides", "optimizer.lr=0.1", "overrides="),
    ("warmup_steps", {"model": "five"}, "warmup_steps="),
    ("seed", 1.5, "seed=1.5 is not an integer"),
    ("outcomes", {"completed": "yes"}, "outcomes="),
    ("lr_peak", None, "lr_peak is null"),
]


@pytest.mark.parametrize("key,value,reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_record_is_skipped_and_named(tmp_path, key, value, reason):
    root = small_sweep(tmp_path / "sweep")
    r = json.loads((root / "3" / "result.json").read_text())
    r[key] = value
    (root / "3" / "result.json").write_text(json.dumps(r))
    res = rep.report(root, tmp_path / "out", figures=False)
    named = [w for w in res["warnings"] if str(root / "3" / "result.json") in w]
    assert len(named) == 1 and "malformed record skipped" in named[0] and reason in named[0], res["warnings"]
    assert res["summary"]["n_runs"].sum() == 11


def test_a_record_missing_a_required_key_is_named(tmp_path):
    root = small_sweep(tmp_path / "sweep")
    r = json.loads((root / "5" / "result.json").read_text())
    del r["lr_base"]
    (root / "5" / "result.json").write_text(json.dumps(r))
    res = rep.report(root, tmp_path / "out", figures=False)
    assert any("no 'lr_base' key" in w and str(root / "5") in w for w in res["warnings"])
    assert "no 'lr_base' key" in (tmp_path / "out" / "README.md").read_text()


JUNK = ["x", "", "nan", "inf", None, True, -1, 0, 1e308, 2.5, [], [1, "a"], {}, {"a": None}, {"val_acc": [1]}]


def test_fuzz_the_report_never_crashes_on_record_content(tmp_path):
    """Many records, each with one key replaced by junk: the report finishes (or says there is nothing to
    report) and names every record it skipped; with figures for a few of the sweeps."""
    rng = np.random.default_rng(0)
    keys = sorted(record(0))
    for trial in range(24):
        root = small_sweep(tmp_path / f"s{trial}")
        for i in range(12):
            if rng.random() < 0.5:
                continue
            p = root / str(i) / "result.json"
            r = json.loads(p.read_text())
            for _ in range(int(rng.integers(1, 3))):
                k = keys[int(rng.integers(len(keys)))]
                if rng.random() < 0.2:
                    r.pop(k, None)
                else:
                    r[k] = JUNK[int(rng.integers(len(JUNK)))]
            p.write_text(json.dumps(r))
        try:
            res = rep.report(root, tmp_path / f"out{trial}", figures=trial % 8 == 0)
        except rep.ReportError:
            continue
        text = "\n".join(res["warnings"])
        for i in range(12):
            r = json.loads((root / str(i) / "result.json").read_text())
            if rep.record_problem(r) is not None:
                assert str(root / str(i) / "result.json") in text


def test_two_sweeps_with_different_grid_keys_in_one_folder(tmp_path):
    """Sweep A varies warmup.steps, sweep B does not override it: B's cells take its configured value (null),
    not NaN, which equals nothing and used to crash the figures."""
    root = tmp_path / "sweep"
    recs = []
    for steps in (5, 10):
        for seed in range(2):
            r = record(len(recs), warmup="linear", lr=0.1, seed=seed, acc=0.9 + steps / 1000)
            r["overrides"] = [*r["overrides"], f"warmup.steps={steps}"]
            r["config"]["warmup"]["steps"] = steps
            recs.append(r)
    for lr in (0.1, 0.3):
        for seed in range(2):
            r = record(len(recs), warmup="none", lr=lr, seed=seed, acc=0.8)
            r["config"]["warmup"]["steps"] = None
            recs.append(r)
    write_sweep(root / "a", recs[:4])
    write_sweep(root / "b", recs[4:])
    res = rep.report(root, tmp_path / "out")
    s = res["summary"]
    assert sorted(s["warmup.steps"].map(str)) == ["10", "5", "null", "null"]
    assert s["n_runs"].tolist() == [2, 2, 2, 2]
    assert {f.name for f in res["figures"]} >= {"heatmap.png", "curves.png"}


def test_a_truncated_metrics_file_is_named(tmp_path):
    root = small_sweep(tmp_path / "sweep")
    for i in range(12):
        p = root / str(i) / "metrics.jsonl"
        p.write_text(p.read_text()[:-20])  # a killed writer: the last row is cut off
    res = rep.report(root, tmp_path / "out")
    cut = [w for w in res["warnings"] if "metrics.jsonl has a truncated last line at line 10 of 10" in w]
    assert cut and all("rows from there on dropped" in w for w in cut)
    assert "truncated last line" in (tmp_path / "out" / "README.md").read_text()


def test_failed_runs_are_named_with_their_error_in_the_readme(tmp_path):
    root = small_sweep(tmp_path / "sweep")
    r = json.loads((root / "2" / "result.json").read_text())
    r.update(status="failed", final=None, best=None, error="RuntimeError: boom in loss()", traceback="Traceback...\nRuntimeError: boom in loss()")
    (root / "2" / "result.json").write_text(json.dumps(r))
    res = rep.report(root, tmp_path / "out", figures=False)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Jobs that failed or did not finish" in readme
    assert f"- `{root / '2'}`: RuntimeError: boom in loss()" in readme
    assert any("never finished (status failed" in w and "RuntimeError: boom in loss()" in w for w in res["warnings"])


def test_a_run_recorded_twice_counts_once(tmp_path):
    """Two parts of a study that share a grid point write the same run twice: one seed, not two."""
    recs = [record(i, seed=i % 3, lr=0.1, acc=0.9 + 0.01 * (i % 3)) for i in range(3)]
    for r in recs:
        r["config_hash"] = f"h{r['seed']}"
    dup = dict(recs[0], started="2026-01-01T00:00:59+00:00")
    root = write_sweep(tmp_path / "s", [*recs, dup])
    res = rep.report(root, tmp_path / "out", figures=False)
    assert int(res["summary"]["n_runs"].iloc[0]) == 3
    assert any("duplicate run (same config as" in w for w in res["warnings"])


def _averaged(r: dict, avg: float, k: int = 5, evals: int = 5) -> dict:
    """Record ``r`` as written with train.average_last=k: its final block kept, the mean of its last evaluations in final_avg."""
    r = dict(r, metric_block="final_avg", average_last=k, final_avg_steps=list(range(99 - 10 * (evals - 1), 100, 10)))
    r["final_avg"] = {"val_acc": avg, "val_loss": 1 - avg, "d_acc_real": 0.75}  # and a value that is no task metric
    r["test"] = {"test_acc": 0.5, "test_loss": 0.5}
    r["test_avg"] = {"test_acc": avg - 0.01, "test_loss": 1.01 - avg}
    return r


def test_the_tables_use_the_averaged_block_when_the_records_name_it(tmp_path):
    """With train.average_last the record names final_avg as its metric block: the cells, best LR and warm-up effect
    read the mean of the last evaluations (and test_avg), never the final evaluation, which these records set far off."""
    recs = []
    for w, lr, avgs in (("none", 0.1, [0.80, 0.82, 0.84]), ("none", 0.3, [0.70, 0.72, 0.74]), ("linear", 0.1, [0.85, 0.87, 0.89]), ("linear", 0.3, [0.86, 0.88, 0.90])):
        for seed, a in enumerate(avgs):
            recs.append(_averaged(record(len(recs), warmup=w, lr=lr, seed=seed, acc=0.1), a))
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    s = res["summary"].set_index(["warmup", "lr_base"])
    assert s.loc[("none", 0.1), "mean"] == pytest.approx(0.82)  # the final block's 0.1 is nowhere
    assert s.loc[("none", 0.1), "test_mean"] == pytest.approx(0.81)  # test_avg, not test (0.5)
    b = res["best"].set_index("warmup")
    assert b.loc["none", "lr_base"] == 0.1 and b.loc["linear", "lr_base"] == 0.3
    e = res["effect"].iloc[0]
    assert e["diff"] == pytest.approx(0.87 - 0.81)  # test_avg of linear at 0.3 minus none at 0.1, paired over seeds
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert set(runs["metric_block"]) == {"final_avg"} and (runs["avg_evals"] == 5).all()
    assert runs["final_val_acc"].eq(0.1).all() and runs["avg_val_acc"].max() == pytest.approx(0.90)
    assert runs["avg_d_acc_real"].eq(0.75).all() and "best_d_acc_real" not in runs
    md = (tmp_path / "out" / "table.md").read_text()
    assert "Cells: success rate and val_acc (mean of the last 5 evaluations)" in md
    assert "Best LR per group: selected on val_acc (mean of the last 5 evaluations)" in md
    assert "metric: val_acc (mean of the last 5 evaluations)" in (tmp_path / "out" / "README.md").read_text()
    assert not any("average" in w for w in res["warnings"])


def test_mixed_readings_and_short_runs_are_warned_about(tmp_path):
    recs = [_averaged(record(0, seed=0), 0.8), _averaged(record(1, seed=1), 0.8, evals=3), record(2, seed=2, acc=0.8)]
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    assert any("1 of 3 runs report their final evaluation" in w for w in res["warnings"])
    assert any("1 run(s) had fewer evaluations than train.average_last and average what they have (fewest: 3)" in w for w in res["warnings"])


def test_a_floor_the_task_states_is_shown_beside_the_metric(tmp_path):
    recs = [record(i, seed=i, lr=lr, acc=0.9) for i, lr in enumerate([0.1, 0.1, 0.3, 0.3])]
    for r in recs:
        r["task_info"] = {"floor": {"val_acc": 0.99}}
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    assert res["summary"]["floor"].tolist() == [0.99, 0.99] and res["best"]["floor"].iloc[0] == 0.99
    md = (tmp_path / "out" / "table.md").read_text()
    assert md.count("floor (real vs real)") >= 2 and "| 0.99 |" in md
    plain = rep.report(write_sweep(tmp_path / "plain", [record(0)]), tmp_path / "out_plain", figures=False)
    assert "floor (real vs real) |" not in (tmp_path / "out_plain" / "table.md").read_text() and plain["summary"]["floor"].isna().all()


def test_declared_arm_keys_pair_every_arm_with_one_baseline(tmp_path):
    """A GAN's records declare task.warmup_on (any value goes with no warm-up) and task.lr_mult.discriminator
    (baseline 1) as arm keys: warm-up on G and two time scales without warm-up are both arms against the one
    no-warm-up cell, not groups of their own."""
    recs = []
    arms = [("none", "both", 1, [0.80, 0.82, 0.84]), ("linear", "generator", 1, [0.85, 0.88, 0.91]), ("linear", "discriminator", 1, [0.8, 0.8, 0.8]),
            ("none", "both", 2, [0.70, 0.71, 0.72])]
    for warmup, on, mult, accs in arms:
        for seed, a in enumerate(accs):
            r = record(len(recs), warmup=warmup, lr=0.1, seed=seed, acc=a)
            r["overrides"] += [f"task.warmup_on={on}", f"task.lr_mult.discriminator={mult}"]
            r["config"]["task"] = {"warmup_on": on, "lr_mult": {"discriminator": mult, "generator": 1}}
            r["arm_keys"] = {"task.warmup_on": None, "task.lr_mult.discriminator": 1.0, "task.lr_mult.generator": 1.0}
            recs.append(r)
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    e = res["effect"].set_index(["warmup", "task.warmup_on", "task.lr_mult.discriminator"])
    assert len(e) == 3
    assert e.loc[("linear", "generator", "1"), "diff"] == pytest.approx(0.88 - 0.82) and e.loc[("linear", "generator", "1"), "n_pairs"] == 3
    assert e.loc[("none", "both", "2"), "diff"] == pytest.approx(0.71 - 0.82)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| linear lr_mult.discriminator=1 warmup_on=generator |" in md and "| none lr_mult.discriminator=2 warmup_on=both |" in md


def test_warmup_comparison_puts_the_arms_of_a_group_in_one_panel(tmp_path):
    """Arm keys (a GAN's warm-up target, two time scales) are arms side by side in one panel, not a panel each."""
    from matplotlib.image import imread

    from bench import report_plots

    recs = []
    for warmup, on, mult in [("none", "both", 1), ("linear", "generator", 1), ("linear", "discriminator", 1), ("none", "both", 2), ("none", "both", 4)]:
        for seed in range(3):
            r = record(len(recs), warmup=warmup, lr=0.1, seed=seed, acc=0.8 + 0.01 * seed)
            r["overrides"] += [f"task.warmup_on={on}", f"task.lr_mult.discriminator={mult}"]
            r["config"]["task"] = {"warmup_on": on, "lr_mult": {"discriminator": mult, "generator": 1}}
            r["arm_keys"] = {"task.warmup_on": None, "task.lr_mult.discriminator": 1.0, "task.lr_mult.generator": 1.0}
            recs.append(r)
    rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out")
    height, width = imread(tmp_path / "out" / "warmup_comparison.png").shape[:2]
    assert width < 2.5 * height  # one panel (five panels in a row were 5 x 6.4 in wide)
    assert report_plots._arm_label({"warmup": "linear", "task.warmup_on": "generator", "warmup.fraction": 0.1}, ["task.warmup_on", "warmup.fraction"]) == "linear warmup_on=generator fraction=0.1"
    assert report_plots._arm_label({"warmup": "none", "warmup.fraction": "null"}, ["warmup.fraction"]) == "none"


def test_heatmap_and_failure_figure_show_arms_and_count_every_failure(tmp_path):
    """Warm-up lengths are arms: a column each in the heat map and a line each in divergence.png, which counts every
    failure outcome (here: stalled), not only divergence, over finished runs."""
    from bench import report_plots

    recs = []
    fails = {("none", None): {1.0: 2}, ("linear", 0.02): {1.0: 1}, ("linear", 0.1): {}}
    for (warmup, fraction), failed in fails.items():
        for lr in (0.1, 1.0):
            for seed in range(3):
                stalled = seed < failed.get(lr, 0)
                r = record(len(recs), warmup=warmup, lr=lr, seed=seed, acc=0.1 if stalled else 0.9, status="stalled" if stalled else "completed")
                r["overrides"].append(f"warmup.fraction={'null' if fraction is None else fraction}")
                r["config"]["warmup"]["fraction"] = fraction
                r["outcomes"] = {"completed": True, "stalled": False}  # as the harness declares them
                recs.append(r)
    root = write_sweep(tmp_path / "sweep", recs)
    sw = rep.load(root)
    summary = rep.summarize(sw)
    with saved_figures() as grabbed:
        report_plots.heatmap(sw, summary, rep.best_lr(sw, summary), tmp_path / "h.png")
        report_plots.divergence(sw, tmp_path / "d.png")
    heat, fail = grabbed
    (panel,) = [ax for ax in heat.axes if ax.images]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["none", "linear\nfraction=0.02", "linear\nfraction=0.1"]
    (ax,) = [a for a in fail.axes if a.lines]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
    assert lines == {"none": [0.0, pytest.approx(2 / 3)], "linear fraction=0.02": [0.0, pytest.approx(1 / 3)], "linear fraction=0.1": [0.0, 0.0]}
    assert "failures here: stalled" in fail._suptitle.get_text()
