"""The CLI maps arguments onto library calls; its exit codes and messages are part of the interface."""
from __future__ import annotations

import pytest

import ssmkit
from ssmkit.cli.main import main


def test_list_prints_every_mixer(capsys):
    assert main(["list", "--d-model", "8"]) == 0
    out = capsys.readouterr().out
    for name in ssmkit.list_mixers():
        assert f"\n{name} " in out


def test_check_passes_and_reports_rows(capsys):
    name = "s4d"
    assert main(["check", name, "--lengths", "5"]) == 0
    out = capsys.readouterr().out
    assert "ALL PASS" in out and "PASS" in out and "step" in out
    assert "mode:reference" not in out, "the reference against itself is no check"


def test_check_by_default_crosses_chunks_at_two_lengths(capsys, monkeypatch):
    """Without a GPU or the interpreter (turned off here: interpreted at L = 389 it would take a
    minute), the Triton and peer modes are reported n/a with the reason, and the run passes."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert main(["check", "gla"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("gla ")]
    settings = {(r[1], r[2]) for r in rows}
    assert settings == {("L=13", "chunk_size=4"), ("L=389", "chunk_size=64")}
    assert {r[3] for r in rows} >= {"mode:chunked", "mode:parallel", "step", "split:chunked", "mask:chunked",
                                     "grad:chunked"}
    not_run = {r[3]: r[5] for r in rows if r[3] in ("mode:triton", "mode:fla", "mode:fla_recurrent")}
    assert not_run == {"mode:triton": "n/a", "mode:fla": "n/a", "mode:fla_recurrent": "n/a"}


def test_check_fails_with_nonzero_exit_when_tolerance_is_impossible(capsys):
    name = "s4d"
    assert main(["check", name, "--lengths", "5", "--tol", "-1"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_unknown_mixer_is_a_clear_error(capsys):
    assert main(["check", "no_such_mixer"]) == 2
    assert "registered mixers" in capsys.readouterr().err


def test_train_demo_runs_briefly(capsys):
    assert main(["train", "--steps", "3", "--delay", "3", "--d-model", "8", "--layers", "1", "--batch-size", "4"]) == 0
    assert "test accuracy" in capsys.readouterr().out


# segments / blocks shorter than the 16-state windows below, so that training reads the carried state
SHORT_SEGMENTS = {"transformer_xl": ["mixer.segment_len=4", "mixer.mem_len=4"], "infini_attention": ["mixer.segment_len=4"],
                  "block_recurrent": ["mixer.block_len=4"], "rmt": ["mixer.segment_len=4"], "swa": ["mixer.window=4"],
                  "vpt": ["mixer.window=4"]}


@pytest.mark.parametrize("name", ["swa", "transformer_xl", "infini_attention", "block_recurrent", "rmt", "vpt"])
def test_train_step_of_each_recurrent_transformer(name, tmp_path, capsys):
    """One training step of every Transformer that regains recurrence, on the rigid body, through the CLI."""
    small = ["steps=1", "d_model=16", "n_layers=1", "batch_size=4", "task.steps=40", "task.length=16",
             "task.n_train=2", "task.n_val=1", "task.n_test=1", *SHORT_SEGMENTS[name]]
    argv = ["train", "--task", "rigid_body", "--mixer", name, "--out", str(tmp_path / name)]
    assert main(argv + [a for kv in small for a in ("--set", kv)]) == 0
    assert "test mse" in capsys.readouterr().out


@pytest.mark.parametrize("name, field", [("transformer_xl", "segment_len"), ("infini_attention", "segment_len"),
                                         ("block_recurrent", "block_len"), ("rmt", "segment_len")])
def test_a_segment_as_long_as_the_training_sequences_is_refused_naming_the_field(name, field, tmp_path, capsys):
    """16-state windows and a 16-token segment: no token would read the carried state, so it would never train."""
    small = ["steps=1", "d_model=16", "n_layers=1", "task.steps=40", "task.length=16", f"mixer.{field}=16"]
    argv = ["train", "--task", "rigid_body", "--mixer", name, "--out", str(tmp_path / name)]
    assert main(argv + [a for kv in small for a in ("--set", kv)]) == 2
    err = capsys.readouterr().err
    assert f"'mixer.{name}.{field}': 16 is not shorter than the task's training sequences (16 tokens)" in err
    assert f"expected {field} < 16" in err


def test_bench_prints_ratio_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes results/bench-lti.{md,json} under the working directory
    name = "s4d"
    assert main(["bench", "--mixers", name, "--lengths", "64", "--d-model", "8", "--d-state", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "fwd / fft" in out and f"| {name} | 64 |" in out


def test_bench_plot_writes_a_png(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    png = tmp_path / "sub" / "bench.png"
    args = ["bench", "--suite", "mixers", "--mixers", "s4d", "--lengths", "32,64", "--d-model", "8",
            "--repeats", "1", "--plot", str(png)]
    assert main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in capsys.readouterr().out


def test_bench_plot_of_an_unplotted_suite_is_refused(capsys):
    assert main(["bench", "--suite", "decode", "--plot", "x.png"]) == 2
    assert "--plot draws the lti and mixers suites" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["compare", "--seeds", "a"], ["--seeds", "'a' is not an integer", "seeds >= 0"]),
    (["compare", "--seeds", "-1"], ["--seeds", "-1 is out of range"]),
    (["compare", "--lengths", "64,,0"], ["--lengths", "0 is out of range", "lengths >= 1"]),
    (["bench", "--lengths", "0"], ["--lengths", "0 is out of range"]),
    (["bench", "--batch", "0"], ["--batch", "expected an integer >= 1"]),
    (["check", "--lengths", "x"], ["--lengths", "'x' is not an integer"]),
])
def test_bad_numbers_on_the_command_line_are_named(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
