"""The shared test helpers themselves: polling with a timeout, loading a script from scripts/."""

from __future__ import annotations

import pytest

from conftest import load_script, wait_for


def test_wait_for_returns_the_first_truthy_value():
    calls = iter([None, 0, "", "found"])
    assert wait_for(lambda: next(calls), 5, 0.001, "a value") == "found"


def test_wait_for_names_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the moon"):
        wait_for(lambda: False, 0.05, 0.01, "the moon")


def test_wait_for_lets_the_predicate_fail_at_once():
    def dead():
        raise AssertionError("the job ended early")

    with pytest.raises(AssertionError, match="the job ended early"):
        wait_for(dead, 60, 1, "rows")  # no 60 s wait: the predicate's own failure comes through


def test_load_script_gives_the_stand_in_data_writer(tmp_path):
    fake = load_script("vision_fake")
    assert fake is load_script("vision_fake")  # loaded once
    fake.write_cifar(tmp_path, "cifar100", n_train=3, n_test=2)
    assert sorted(p.name for p in (tmp_path / "cifar-100-python").iterdir()) == ["meta", "test", "train"]
