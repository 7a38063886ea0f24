"""ssmkit compare on a micro budget: a complete results.json (every field, its type), a table with
mean ± std over seeds and chance, readable PNGs, atomic files; published rows only where the
task's setting matches the paper's."""
from __future__ import annotations

import json
import math
import struct

import pytest
import torch

from ssmkit.benchmarks import compare as cmp
from ssmkit.benchmarks.measure import saved_bytes
from ssmkit.benchmarks.published import PUBLISHED, published_for
from ssmkit.benchmarks.report import FORMAT, load_results, markdown_table, readme_block, summarize
from ssmkit.io import atomic_write

MIXERS = ["s4d", "attention"]
MICRO = ["d_model=8", "n_layers=1", "batch_size=4", "progress=false", "log_every=1",
         "task.delay=3", "task.n_copy=2", "task.n_eval=12", "eval_batch_size=12"]
RUN_FIELDS = {
    "mixer": str, "seed": int, "task": str, "metrics": dict, "steps": int, "parameters": int, "state_size": int,
    "state_length": int, "train_tokens_per_s": float, "inference_tokens_per_s": float, "wall_seconds": float,
    "cpu_seconds": float, "device": str, "ssmkit_version": str, "torch_version": str, "peak_memory_kind": str,
    "activation_mb": float, "peak_memory_mb": float,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    spec = cmp.CompareSpec(mixers=MIXERS, task="copy_memory", seeds=[0, 1], budget=2, overrides=MICRO, lengths=[8, 16])
    res = cmp.compare(spec, out, log=lambda s: None)
    return out, res


def test_results_json_has_every_field_per_mixer_and_seed(results):
    out, _ = results
    data = json.loads((out / "results.json").read_text())
    assert data["format"] == FORMAT and data["task"] == "copy_memory" and data["metric"] == "test_accuracy"
    assert data["mixers"] == MIXERS and data["seeds"] == [0, 1]
    assert {(r["mixer"], r["seed"]) for r in data["runs"]} == {(m, s) for m in MIXERS for s in (0, 1)}
    for r in data["runs"]:
        for field, kind in RUN_FIELDS.items():
            assert isinstance(r[field], kind), (field, r[field])
        assert r["peak_memory_mb"] > r["activation_mb"] > 0
        assert r["steps"] == 2 and r["task"] == "copy_memory" and r["state_length"] == 2 * 2 + 3
        assert 0.0 <= r["metrics"]["test_accuracy"] <= 1.0
        assert r["parameters"] > 0 and r["train_tokens_per_s"] > 0 and r["inference_tokens_per_s"] > 0
    state = {r["mixer"]: r["state_size"] for r in data["runs"]}
    assert state["attention"] != state["s4d"] > 0  # KV cache at L=7 vs a fixed diagonal state
    assert isinstance(data["chance"], float) and 0 < data["chance"] < 1
    rows = {(row["name"], row["length"]): row for row in data["speed_vs_length"]}
    assert rows[("s4d", 16)]["activation_mb"] > rows[("s4d", 8)]["activation_mb"] > 0
    names = {row["name"] for row in data["speed_vs_length"]}
    assert names == {"s4d", "attention"} and {row["length"] for row in data["speed_vs_length"]} == {8, 16}
    assert data["configs"]["s4d"]["model"]["d_model"] == 8 and data["configs"]["attention"]["model"]["mixer"] == "attention"
    assert data["published"] == []  # a delay-3 copy task matches no paper's setting


def _records(out, mixer, seed) -> list[dict]:
    lines = (out / "runs" / f"{mixer}-seed{seed}" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_jsonl_metrics_per_run_and_seeds_differ(results):
    out, _ = results
    for mixer in MIXERS:
        first_loss = []
        for seed in (0, 1):
            records = _records(out, mixer, seed)
            assert any(r["split"] == "test" for r in records)
            first_loss.append(next(r["loss"] for r in records if r["split"] == "train"))
        assert first_loss[0] != first_loss[1], f"{mixer}: seeds 0 and 1 gave the same first loss"


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_plots_are_readable_pngs(results):
    out, res = results
    for name in ("metric_plot", "speed_plot"):
        path = out / f"{'metric' if name == 'metric_plot' else 'speed_memory'}.png"
        assert res["files"][name] == str(path)
        width, height = _png_size(path)
        assert width > 100 and height > 100
    image = pytest.importorskip("matplotlib.image").imread(out / "metric.png")
    assert image.ndim == 3 and image.std() > 0  # not a blank canvas


def test_no_temporary_files_left(results):
    out, _ = results
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_table_mean_std_chance_and_columns(results):
    out, res = results
    table = (out / "results.md").read_text()
    assert table.strip() == markdown_table(res)
    assert "Chance:" in table and "seeds 0, 1" in table and "published" not in table.split("\n")[2]
    for mixer in MIXERS:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{mixer}`"))
        assert " ± " in row and len(row.split("|")) == 11


def test_saved_bytes_counts_each_saved_storage_once():
    a = torch.randn(1000, requires_grad=True)
    b = torch.randn(1000, requires_grad=True)
    # mul saves a and b (4000 bytes each), exp saves its output (4000)
    assert saved_bytes(lambda: (a * b).exp()) == 12_000
    assert saved_bytes(lambda: (a * b).exp(), exclude={b.untyped_storage().data_ptr()}) == 8_000
    with torch.no_grad():
        assert saved_bytes(lambda: (a * b).exp()) == 0


def test_summary_is_mean_and_sample_std():
    res = {"mixers": ["a"], "metric": "test_accuracy", "runs": [
        {"mixer": "a", "metrics": {"test_accuracy": v}, "parameters": 1, "state_size": 2, "train_tokens_per_s": 1.0,
         "inference_tokens_per_s": 1.0, "activation_mb": 1.0, "peak_memory_mb": 2.0, "wall_seconds": 1.0}
        for v in (0.5, 0.7, 0.9)]}
    (row,) = summarize(res)
    assert math.isclose(row["metric"], 0.7) and math.isclose(row["metric_std"], 0.2) and row["n"] == 3


def test_readme_block_regenerates_the_table(results):
    out, res = results
    block = readme_block(out / "results.json")
    assert block.startswith("<!-- generated by: ssmkit compare --readme-table")
    assert markdown_table(res) in block


def test_load_results_names_the_bad_file(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="results.json: not valid JSON"):
        load_results(bad)
    bad.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an ssmkit compare results file"):
        load_results(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_results(tmp_path / "missing.json")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("old")

    def broken(p):
        p.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.md"]


@pytest.mark.parametrize("bad, message", [
    (dict(mixers=[]), "at least one mixer"),
    (dict(mixers=["s4d", "s4d"]), "names a mixer twice"),
    (dict(mixers=["s4d"], seeds=[]), "at least one seed"),
    (dict(mixers=["s4d"], budget=0), "--budget"),
    (dict(mixers=["s4d"], overrides=["mixer=lstm"]), "use --mixers and --seeds"),
    (dict(mixers=["no_such_mixer"]), "registered mixers"),
    (dict(mixers=["s4d"], task="no_such_task"), "registered tasks"),
    (dict(mixers=["s4d"], task="mqar", preset="selective_copy_small"), "runs task 'selective_copy'"),
], ids=["no-mixers", "duplicate", "no-seeds", "budget", "mixer-override", "unknown-mixer", "unknown-task",
        "preset-task-mismatch"])
def test_spec_errors_before_training(bad, message):
    with pytest.raises((ValueError, KeyError, TypeError), match=message):
        cmp.CompareSpec(**bad).runs()


def test_default_spec_is_the_embedded_comparison():
    runs = cmp.CompareSpec(mixers=cmp.DEFAULT_MIXERS).runs()
    assert list(runs) == cmp.DEFAULT_MIXERS
    assert {r.task for r in runs.values()} == {"selective_copy"}
    assert len({(r.train.steps, r.train.batch_size, r.train.lr) for r in runs.values()}) == 1  # same budget


def test_published_rows_only_for_the_papers_setting():
    full = {"n_noise": 4096, "n_copy": 16, "vocab_size": 16}
    rows = published_for("selective_copy", full, ["mamba", "s4d", "s4"])
    assert {r.mixer for r in rows} == {"mamba", "s4"} and all(r.source for r in rows)
    assert published_for("selective_copy", {**full, "n_noise": 32}, ["mamba"]) == []
    assert all(p.source and p.model for p in PUBLISHED)


def test_cells_are_every_mixer_and_seed_with_their_own_key():
    spec = cmp.CompareSpec(mixers=["s4d", "lstm"], seeds=[0, 1])
    cells = spec.cells("copy_memory")
    assert [(c.task, c.mixer, c.seed) for c in cells] == [
        ("copy_memory", m, s) for m in ("s4d", "lstm") for s in (0, 1)]
    assert [c.key for c in cells] == ["s4d-seed0", "s4d-seed1", "lstm-seed0", "lstm-seed1"]
    assert spec.preset_name == cmp.DEFAULT_PRESET and cmp.CompareSpec(mixers=["s4d"], task="mqar").preset_name is None
