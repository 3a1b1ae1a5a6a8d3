"""Published studies come from committed code: every record in results/ was made from one
training-code commit with a clean tree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

STUDIES = sorted((ROOT / "results").rglob("runs.csv"))


def test_there_is_a_published_study():
    assert STUDIES, "results/ holds no runs.csv"


@pytest.mark.parametrize("runs_csv", STUDIES, ids=[str(p.relative_to(ROOT)) for p in STUDIES])
def test_every_record_comes_from_one_clean_commit(runs_csv: Path):
    runs = pd.read_csv(runs_csv)
    assert len(runs) > 0
    assert not runs["git_dirty"].astype(bool).any(), f"{runs_csv}: records from an uncommitted tree"
    commits = runs["git_commit"].dropna().unique()
    assert len(commits) == 1, f"{runs_csv}: records from {len(commits)} commits ({', '.join(c[:10] for c in commits)})"
    readme = (runs_csv.parent / "README.md").read_text()
    assert commits[0] in readme or commits[0][:10] in readme, f"{runs_csv.parent}/README.md does not name the commit {commits[0][:10]}"
