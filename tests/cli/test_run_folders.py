"""Issue-12 behaviour of `ssmkit train --out DIR`: a folder holding a run is never silently reused, a
failed resume rewrites nothing, --overwrite moves the old run aside, a resume names what changed."""
from __future__ import annotations

import json

from ssmkit.cli.main import main

TINY = ["--task", "copy_memory", "--mixer", "s4d", "--set", "d_model=8", "--set", "n_layers=1",
        "--set", "batch_size=4", "--set", "progress=false", "--set", "task.delay=3", "--set", "task.n_copy=2",
        "--set", "task.n_eval=8"]


def _train(out, *extra) -> int:
    return main(["train", *TINY, "--set", "steps=2", "--out", str(out), *extra])


def _snapshot(folder) -> dict[str, bytes]:
    """Every file of a run folder but the lock file (it names the last process that claimed the folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_second_run_into_a_run_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    assert _train(tmp_path) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert _train(tmp_path, "--set", "seed=1") == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(tmp_path) == before


def test_overwrite_moves_the_old_run_aside(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    old = _snapshot(out)
    assert _train(out, "--overwrite", "--set", "seed=1") == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and f"moved the run that was in {out}" in capsys.readouterr().out
    assert _snapshot(aside[0]) == old
    assert json.loads((out / "run.json").read_text())["train"]["seed"] == 1


def test_a_resume_that_changes_the_data_is_refused_before_anything_is_rewritten(tmp_path, capsys):
    assert _train(tmp_path) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert _train(tmp_path, "--resume", "--set", "task.delay=5", "--set", "dropout=0.1") == 2
    err = capsys.readouterr().err
    assert "refused" in err and "task_cfg.delay: 3 -> 5" in err and "model.dropout: 0.0 -> 0.1" in err
    assert _snapshot(tmp_path) == before


def test_a_resume_that_changes_training_warns_and_continues(tmp_path, capsys):
    assert _train(tmp_path) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "--set", "steps=4", "--set", "lr=0.01", "--out", str(tmp_path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "training settings differ" in out and "train.lr: 0.003 -> 0.01" in out and "train.steps: 2 -> 4" in out
    assert (tmp_path / "step-00000004").is_dir()


def test_out_satisfies_checkpoint_every(tmp_path):
    assert main(["train", *TINY, "--set", "steps=4", "--set", "checkpoint_every=2", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000004"]


def test_a_per_layer_mixer_list_from_the_command_line(tmp_path):
    argv = ["train", "--task", "copy_memory", "--mixer", "s4d,mamba,attention", "--set", "n_layers=3",
            "--set", "d_model=8", "--set", "steps=1", "--set", "batch_size=2", "--set", "progress=false",
            "--set", "task.delay=3", "--set", "task.n_copy=2", "--set", "task.n_eval=4", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads((tmp_path / "run.json").read_text())["model"]["mixer"] == ["s4d", "mamba", "attention"]
