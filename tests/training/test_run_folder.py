"""Run folders: a live run locks its folder; a folder holding a run is refused to a new run unless
resumed or moved aside (never deleted); run descriptions are compared field by field for resume."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmkit.training.run_folder import RunFolderError, claim, holds_run, read_run, run_differences

SRC = Path(__file__).resolve().parents[2] / "src"


def test_a_free_folder_is_claimed_and_released(tmp_path):
    with claim(tmp_path / "run", resume=False) as folder:
        assert (folder / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    with claim(tmp_path / "run", resume=False):  # released on exit
        pass


def test_a_second_live_process_is_locked_out(tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, time\n"
            "from ssmkit.training.run_folder import claim\n"
            f"with claim({str(folder)!r}, resume=False):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by a live run \(pid {holder.pid} on"):
            with claim(folder, resume=True):
                pass
    finally:
        holder.kill()
        holder.wait()
    with claim(folder, resume=True):  # the OS released the dead holder's lock
        pass


def test_a_folder_holding_a_run_is_refused_then_moved_aside(tmp_path):
    folder = tmp_path / "run"
    (folder / "step-00000010").mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    assert holds_run(folder) == ["1 checkpoint(s) up to step-00000010", "run.json", "metrics.jsonl"]
    with pytest.raises(RunFolderError) as err:
        with claim(folder, resume=False):
            pass
    msg = str(err.value)
    assert "already holds a run" in msg and "--resume" in msg and "--overwrite" in msg and "another folder" in msg
    assert holds_run(folder)  # nothing touched
    with claim(folder, resume=True):  # resuming is what the folder is for
        pass
    lines: list[str] = []
    with claim(folder, resume=False, overwrite=True, log=lines.append):
        assert holds_run(folder) == []
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and "moved the run" in lines[0] and str(aside[0]) in lines[0]
    assert sorted(p.name for p in aside[0].iterdir()) == ["metrics.jsonl", "run.json", "step-00000010"]


def test_run_differences_split_model_and_data_from_training():
    saved = {"task": "copy_memory", "task_cfg": {"delay": 20}, "model": {"d_model": 64, "dropout": 0.0},
             "train": {"lr": 1e-3, "steps": 100, "log_every": 50}, "source": "a"}
    now = {"task": "copy_memory", "task_cfg": {"delay": 40}, "model": {"d_model": 64, "dropout": 0.1},
           "train": {"lr": 1e-3, "steps": 200, "log_every": 10}, "source": "b"}
    refuse, warn = run_differences(saved, now)
    assert refuse == ["model.dropout: 0.0 -> 0.1", "task_cfg.delay: 20 -> 40"]
    assert warn == ["train.steps: 100 -> 200"]  # log_every is operational, source is a note


def test_read_run_names_a_corrupt_file(tmp_path):
    assert read_run(tmp_path) is None
    (tmp_path / "run.json").write_text("{oops")
    with pytest.raises(RunFolderError, match="run.json: not valid JSON"):
        read_run(tmp_path)
