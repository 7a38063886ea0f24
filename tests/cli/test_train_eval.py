"""ssmkit tasks | train --set | eval --checkpoint | compare: the verbs map onto the library and fail clearly."""
from __future__ import annotations

import json

import pytest

from ssmkit.cli.main import main
from ssmkit.tasks import list_tasks

TINY = ["--set", "d_model=8", "--set", "n_layers=1", "--set", "batch_size=4", "--set", "progress=false",
        "--set", "task.delay=3", "--set", "task.n_copy=2", "--set", "task.n_eval=8"]


def test_tasks_lists_every_registered_task_and_the_presets(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in list_tasks():
        assert f"\n| {name} | " in out
    assert "| copy_memory | tag | 10,000 / 1,000 / 1,000 | 40 | 10 | tokens (10) |" in out
    assert "| s4_lra_listops |" in out and "| selective_copy_small |" in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--task", "copy_memory", "--mixer", "s4d", "--set", "steps=2", *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_run_json_checkpoint_and_metrics(trained):
    run = json.loads((trained / "run.json").read_text())
    assert run["task"] == "copy_memory" and run["model"]["d_model"] == 8 and run["task_cfg"]["delay"] == 3
    assert (trained / "step-00000002" / "model.safetensors").is_file()
    assert (trained / "metrics.jsonl").is_file()


def test_eval_scores_the_checkpoint(trained, capsys):
    assert main(["eval", "--checkpoint", str(trained), "--split", "val", "--weights", "final"]) == 0
    out = capsys.readouterr().out
    assert "step-00000002" in out and "val accuracy" in out and "chance" in out
    assert main(["eval", "--checkpoint", str(trained / "step-00000002")]) == 0  # a step folder works too


def test_eval_errors_name_the_problem(trained, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(trained), "--task", "mqar"]) == 2
    assert "trained task 'copy_memory'" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    assert "nor a folder holding checkpoints" in capsys.readouterr().err


def test_train_resume_continues_from_the_checkpoint(trained, capsys):
    assert main(["train", "--task", "copy_memory", "--mixer", "s4d", "--set", "steps=3", *TINY,
                 "--out", str(trained), "--resume"]) == 0
    assert "resum" in capsys.readouterr().out.lower()
    assert (trained / "step-00000003").is_dir()


@pytest.mark.parametrize("args, message", [
    (["--set", "lrate=1"], "unknown config key 'lrate'; valid keys: model:"),
    (["--set", "lr=fast"], "invalid value for 'lr': 'fast' is not a float"),
    (["--set", "mixer.d_state=big"], "mixer.d_state"),
    (["--task", "no_such_task"], "registered tasks"),
    (["--mixer", "no_such_mixer"], "registered mixers"),
    (["--preset", "no_such_preset"], "presets: "),
    (["--task", "mqar", "--delay", "3"], "task 'mqar' has no field 'delay'"),
    (["--resume"], "--resume needs a checkpoint folder"),
], ids=["unknown-key", "bad-float", "mixer-field", "task", "mixer", "preset", "legacy-delay", "resume"])
def test_train_rejects_bad_settings_before_training(args, message, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("ssmkit train: error:")


MQAR_MICRO = ["--set", "d_model=8", "--set", "n_layers=1", "--set", "batch_size=4", "--set", "progress=false",
              "--set", "steps=2", "--set", "task.n_train=64", "--set", "task.n_val=16", "--set", "task.n_test=16",
              "--set", "task.vocab_size=256", "--set", "task.n_eval=16", "--set", "eval_batch_size=16"]


def test_compare_cli_grid_shards_merge_and_readme_table(tmp_path, capsys):
    """The issue's command shape (--tasks mqar,selective_copy --train-lengths 32,64 --eval-lengths 128) on
    micro settings, run as two shards and merged, then the README block."""
    grid = ["compare", "--tasks", "mqar,selective_copy", "--mixers", "s4d,attention", "--train-lengths", "32,64",
            "--eval-lengths", "128", "--lengths", "64", "--speed-d-model", "8", *MQAR_MICRO]
    for k in (0, 1):
        assert main([*grid, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")]) == 0
    assert "--merge" in capsys.readouterr().out
    assert main(["compare", "--merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert "| `s4d` |" in printed and "mqar L=64" in printed and str(tmp_path / "m" / "report" / "report.html") in printed
    data = json.loads((tmp_path / "m" / "report" / "results.json").read_text())
    assert len(data["cells"]) == 2 * 2 * 2 and all([e["length"] for e in c["eval"]] == [128] for c in data["cells"])
    assert main(["compare", "--readme-table", str(tmp_path / "m" / "report" / "results.json")]) == 0
    block = capsys.readouterr().out
    assert "ssmkit compare --readme-table" in block and "| `attention` |" in block
    assert main(["compare", "--readme-table", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "forecast", "--train-lengths", "32"], "task 'forecast' has no length knob"),
    (["--tasks", "mqar", "--train-lengths", "64", "--eval-lengths", "32"], "shorter than the training length"),
    (["--tasks", "mqar", "--eval-lengths", "x"], "invalid eval length 'x'"),
    (["--shard", "3/2"], "invalid --shard '3/2'"),
    (["--merge", "a"], "--merge needs --out"),
    (["--task", "mqar", "--tasks", "mqar"], "either --task or --tasks"),
])
def test_compare_cli_bad_grids(argv, message, capsys):
    assert main(["compare", "--mixers", "s4d", *argv]) == 2
    assert message in capsys.readouterr().err


def test_compare_rejects_bad_arguments(capsys):
    assert main(["compare", "--mixers", "s4d", "--set", "seed=1"]) == 2
    assert "use --mixers and --seeds" in capsys.readouterr().err
    assert main(["compare", "--mixers", "s4d", "--set", "bogus=1"]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err


def test_eval_defaults_to_the_runs_eval_batch_and_reprints_its_test_metrics(tmp_path, capsys):
    """adding draws its test examples batch by batch: only the run's own eval batch size scores the
    examples the run scored (a batch of 256 draws others, as ``eval`` did by default before)."""
    out = tmp_path / "run"
    small = ["--set", "d_model=8", "--set", "n_layers=1", "--set", "batch_size=4", "--set", "progress=false",
             "--set", "task.length=16", "--set", "eval_batch_size=3"]
    assert main(["train", "--task", "adding", "--mixer", "s4d", "--set", "steps=2", *small, "--out", str(out)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("test  step")]
    printed = float(line.split(" mse ")[1].split()[0])

    def mse(*extra: str) -> float:
        assert main(["eval", "--checkpoint", str(out), "--weights", "final", *extra]) == 0
        (got,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("test mse ")]
        return float(got.split()[-1])

    default = mse()
    assert round(default, 3) == printed and default == mse("--batch-size", "3")
    assert mse("--batch-size", "256") != default
