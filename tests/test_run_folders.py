"""Run-folder helpers: the `latest` link, evaluation sub-folders, and finding a checkpoint's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_kd.apps.run_folders import find_run_folder, latest_run, next_stage_folder, update_latest


def _run(root: Path, name: str) -> Path:
    run = root / "kd_ls" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "hparams.yaml").write_text("num_classes: 10\n")
    (run / "checkpoints" / "best.ckpt").write_text("weights")
    return run


def test_latest_is_a_relative_link_replaced_by_each_run(tmp_path):
    first, second = _run(tmp_path, "version_0"), _run(tmp_path, "version_1")
    latest = update_latest(first)
    assert latest.is_symlink()
    assert latest.readlink() == Path("version_0")
    update_latest(second)
    assert latest.readlink() == Path("version_1")
    assert latest_run(tmp_path / "kd_ls") == second.resolve()
    # relative: the whole runs/ tree can be moved
    moved = tmp_path / "moved"
    (tmp_path / "kd_ls").rename(moved)
    assert latest_run(moved) == (moved / "version_1").resolve()


def test_latest_falls_back_to_a_text_file_without_links(tmp_path, monkeypatch):
    run = _run(tmp_path, "version_0")

    def refuse(*args, **kwargs):
        raise OSError("links not allowed here")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    latest = update_latest(run)
    assert not latest.is_symlink()
    assert latest.read_text().strip() == str(run)
    assert latest_run(tmp_path / "kd_ls") == run
    assert not list((tmp_path / "kd_ls").glob(".latest.*"))


def test_latest_never_replaces_a_real_directory(tmp_path):
    run = _run(tmp_path, "version_0")
    (tmp_path / "kd_ls" / "latest").mkdir()
    with pytest.raises(ValueError, match="is a directory, not a link"):
        update_latest(run)


def test_latest_run_says_when_no_fit_finished(tmp_path):
    with pytest.raises(FileNotFoundError, match="no `lightning-kd fit` has finished"):
        latest_run(tmp_path)


def test_checkpoint_run_folder_and_stage_sub_folders(tmp_path):
    run = _run(tmp_path, "version_3")
    update_latest(run)
    assert find_run_folder(run / "checkpoints" / "best.ckpt") == run.resolve()
    assert find_run_folder(tmp_path / "kd_ls" / "latest" / "checkpoints" / "best.ckpt") == run.resolve()
    loose = tmp_path / "elsewhere" / "checkpoints" / "x.ckpt"
    loose.parent.mkdir(parents=True)
    loose.write_text("weights")
    assert find_run_folder(loose) is None, "a folder without a run's record is no run folder"
    assert next_stage_folder(run, "test") == "test_0"
    (run / "test_0").mkdir()
    (run / "test_2").mkdir()
    assert next_stage_folder(run, "test") == "test_1"
    assert next_stage_folder(run, "validate") == "validate_0"
