"""ssmkit compare on a micro grid: every cell recorded, extrapolation, speed curves, the report
(results.json, Markdown, PNGs, report.html); resume skips finished cells and continues an
interrupted one; shards merged equal one unsharded run; bad input is refused before training."""
from __future__ import annotations

import json
import math
import struct
from html.parser import HTMLParser

import pytest
import torch

from ssmkit.benchmarks import compare as cmp
from ssmkit.benchmarks import measure
from ssmkit.benchmarks.grid import DEFAULT_MIXERS, DEFAULT_PRESET, Cell, CompareSpec, parse_shard
from ssmkit.benchmarks.measure import quadratic_fit, saved_bytes
from ssmkit.benchmarks.published import PUBLISHED, published_for
from ssmkit.benchmarks.report import FORMAT, load_results, markdown, readme_block
from ssmkit.io import atomic_write

MIXERS = ["s4d", "attention"]
MICRO = ["d_model=8", "n_layers=1", "batch_size=4", "progress=false", "log_every=1", "eval_batch_size=16",
         "task.n_eval=16", "task.vocab_size=6"]


MICRO_COPY = [o for o in MICRO if not o.startswith("task.vocab_size")]  # copy_memory has no vocab_size


def micro_spec(**kw) -> CompareSpec:
    base = dict(mixers=MIXERS, tasks=["copy_memory", "induction_heads"], seeds=[0, 1], budget=2, overrides=MICRO,
                train_lengths=[8, 12], eval_lengths=["x2", "40"], speed_lengths=[16, 32], speed_d_model=16)
    return CompareSpec(**{**base, **kw})


CELL_FIELDS = {
    "kind": str, "key": str, "task": str, "mixer": str, "seed": int, "train_length": int, "task_info": dict,
    "config": dict, "metrics": dict, "steps": int, "tokens": int, "parameters": int, "state_floats": int,
    "speed": dict, "eval": list, "wall_seconds": float, "train_seconds": float, "spec_hash": str,
    "ssmkit_version": str, "torch_version": str, "finished": str,
}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    spec = micro_spec()
    return out, spec, cmp.compare(spec, out, log=lambda s: None)


def _report(out) -> dict:
    return json.loads((out / "report" / "results.json").read_text())


def test_every_cell_is_recorded_with_its_fields(grid):
    out, spec, _ = grid
    data = _report(out)
    assert data["format"] == FORMAT and data["mixers"] == MIXERS and data["seeds"] == [0, 1]
    keys = {(c["task"], c["train_length"], c["mixer"], c["seed"]) for c in data["cells"]}
    assert keys == {(t, L, m, s) for t in ("copy_memory", "induction_heads") for L in (8, 12) for m in MIXERS
                    for s in (0, 1)}
    for c in data["cells"]:
        for field, kind in CELL_FIELDS.items():
            assert isinstance(c[field], kind), (field, c[field])
        assert c["task_info"]["length"] == c["train_length"] and c["steps"] == 2
        assert c["tokens"] == 2 * 4 * c["train_length"]
        assert 0.0 <= c["metrics"]["test_accuracy"] <= 1.0 and 0 < c["chance"] < 1
        assert c["speed"]["train_tokens_per_s"] > 0 and c["speed"]["activation_mb"] > 0
        assert c["config"]["model"]["d_model"] == 8 and c["config"]["train"]["seed"] == c["seed"]
    states = {(c["mixer"], c["train_length"]): c["state_floats"] for c in data["cells"]}
    assert states["s4d", 8] == states["s4d", 12] and states["attention", 8] < states["attention", 12]
    assert (out / "cells" / "copy_memory-L8-s4d-seed1.json").is_file() and (out / "compare.json").is_file()


def test_extrapolation_scores_every_longer_length(grid):
    out, _, _ = grid
    for c in _report(out)["cells"]:
        L = c["train_length"]
        assert [e["length"] for e in c["eval"]] == sorted({2 * L, 40})
        for e in c["eval"]:
            assert 0.0 <= e["metrics"]["accuracy"] <= 1.0 and e["seconds"] > 0 and e["batch"] >= 1
        if c["mixer"] == "attention":
            assert c["eval"][-1]["state_floats"] > c["state_floats"]  # the KV cache grows with the length


def test_speed_cells_time_each_bare_mixer_at_each_length(grid):
    out, _, _ = grid
    speed = {r["mixer"]: r for r in _report(out)["speed"]}
    assert set(speed) == set(MIXERS)
    for r in speed.values():
        assert r["d_model"] == 16 and [row["length"] for row in r["rows"]] == [16, 32]
        assert all(row["forward_s"] > 0 and row["activation_mb"] > 0 for row in r["rows"])
    assert speed["attention"]["rows"][1]["state_floats"] == 2 * speed["attention"]["rows"][0]["state_floats"]
    assert speed["s4d"]["rows"][1]["state_floats"] == speed["s4d"]["rows"][0]["state_floats"]


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = self.images = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        if tag == "img":
            src = dict(attrs)["src"]
            assert src.startswith("data:image/png;base64,")  # embedded: the page stands alone
            self.images += 1

    def handle_data(self, data):
        self.text.append(data)


def test_report_files_tables_plots_and_html(grid):
    out, _, res = grid
    report = out / "report"
    assert sorted(p.name for p in report.iterdir()) == [
        "accuracy_vs_eval_length.png", "accuracy_vs_train_length.png", "report.html", "results.json",
        "results.md", "speed_memory_state.png"]
    for png in report.glob("*.png"):
        width, height = _png_size(png)
        assert width > 200 and height > 150
    import matplotlib.image

    assert matplotlib.image.imread(report / "accuracy_vs_eval_length.png").std() > 0  # not a blank canvas
    table = (report / "results.md").read_text()
    assert table.strip() == markdown(res)
    for title in ("Accuracy at the training length", "Extrapolation: copy_memory trained at L = 8",
                  "Extrapolation: induction_heads trained at L = 12", "Speed, memory and state vs length",
                  "Trained configurations"):
        assert f"**{title}**" in table
    row = next(line for line in table.splitlines() if line.startswith("| `s4d` |"))
    assert " ± " in row and row.count("|") == 7  # 4 task-length columns, the average, the name
    assert "| chance |" in table
    page = _Page()
    page.feed((report / "report.html").read_text())
    assert page.tables == 7 and page.images == 3
    text = " ".join(page.text)
    assert "Protocol" in text and "Accuracy at the training length" in text and "copy_memory L=12" in text
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_second_run_skips_every_finished_cell(grid):
    out, spec, res = grid
    before = {p.name: p.read_bytes() for p in (out / "cells").iterdir()}
    lines: list[str] = []
    again = cmp.compare(spec, out, log=lines.append)
    assert sum("finished earlier, skipped" in line for line in lines) == len(before)
    assert {p.name: p.read_bytes() for p in (out / "cells").iterdir()} == before
    assert again["cells"] == res["cells"]


def _metrics(records: list[dict]) -> dict:
    return {r["key"]: (r["metrics"], [e.get("metrics") for e in r["eval"]]) for r in records if r["kind"] == "train"}


def test_shards_merged_equal_one_unsharded_run(grid, tmp_path):
    out, spec, res = grid
    for k in (0, 1, 2):
        assert cmp.compare(micro_spec(shard=(k, 3)), tmp_path / f"s{k}", log=lambda s: None) is None
    with pytest.raises(ValueError, match="have no result yet"):
        cmp.merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "partial")
    merged = cmp.merge([tmp_path / f"s{k}" for k in (0, 1, 2)], tmp_path / "merged")
    assert _metrics(merged["cells"]) == _metrics(res["cells"])
    assert [r["key"] for r in merged["speed"]] == [r["key"] for r in res["speed"]]
    assert (tmp_path / "merged" / "report" / "report.html").is_file()
    other = micro_spec(seeds=[0], shard=(0, 2))
    cmp.run_cells(other, tmp_path / "other", log=lambda s: None)
    with pytest.raises(ValueError, match="shards of different comparison commands"):
        cmp.merge([tmp_path / "s0", tmp_path / "other"], tmp_path / "mixed")


def test_an_interrupted_cell_continues_from_its_checkpoint(tmp_path, monkeypatch):
    from ssmkit.training import loop

    spec = micro_spec(tasks=["copy_memory"], mixers=["s4d"], seeds=[0], train_lengths=[8], eval_lengths=[],
                      speed_lengths=[], budget=8, overrides=MICRO_COPY)
    clean = cmp.run_cells(spec, tmp_path / "clean", log=lambda s: None)
    real, saves = loop._save, []

    def save_then_die(*args, **kw):
        real(*args, **kw)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt("killed after the second checkpoint")

    monkeypatch.setattr(loop, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        cmp.run_cells(spec, tmp_path / "cut", log=lambda s: None)
    assert not (tmp_path / "cut" / "cells").exists() or not list((tmp_path / "cut" / "cells").iterdir())
    monkeypatch.setattr(loop, "_save", real)
    resumed = cmp.run_cells(spec, tmp_path / "cut", log=lambda s: None)
    assert resumed[0]["resumed"] is True and clean[0]["resumed"] is False
    assert _metrics(resumed) == _metrics(clean)  # bitwise resume: the same test metrics


def test_a_length_that_cannot_fit_is_recorded_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "available_bytes", lambda: 1024)  # 1 kB: nothing fits
    spec = micro_spec(tasks=["copy_memory"], seeds=[0], train_lengths=[8], eval_lengths=["x4"], overrides=MICRO_COPY)
    records = cmp.run_cells(spec, tmp_path, log=lambda s: None)
    for r in records:
        rows = r["eval"] if r["kind"] == "train" else r["rows"]
        assert rows and all("MB available" in row["skipped"] for row in rows), rows


def test_a_length_over_the_time_budget_is_skipped(tmp_path):
    spec = micro_spec(tasks=["copy_memory"], mixers=["attention"], seeds=[0], train_lengths=[8],
                      eval_lengths=["x2", "x64"], speed_lengths=[], eval_seconds=1e-9, overrides=MICRO_COPY)
    (record,) = cmp.run_cells(spec, tmp_path, log=lambda s: None)
    assert "metrics" in record["eval"][0]  # the first longer length is measured, the next is predicted
    assert "budget" in record["eval"][1]["skipped"]


def test_another_command_into_the_same_folder_is_refused(grid):
    out, _, _ = grid
    with pytest.raises(ValueError, match=r"holds the cells of another comparison.*'seeds'"):
        cmp.run_cells(micro_spec(seeds=[5]), out, log=lambda s: None)


@pytest.mark.parametrize("bad, error, message", [
    (dict(mixers=[]), ValueError, "at least one mixer"),
    (dict(mixers=["s4d", "s4d"]), ValueError, "names a mixer twice"),
    (dict(seeds=[]), ValueError, "at least one seed"),
    (dict(budget=0), ValueError, "--budget"),
    (dict(overrides=["mixer=lstm"]), ValueError, "use --mixers and --seeds"),
    (dict(mixers=["no_such_mixer"]), KeyError, "registered mixers"),
    (dict(tasks=["no_such_task"]), KeyError, "registered tasks"),
    (dict(tasks=["forecast"], overrides=[]), ValueError, "task 'forecast' has no length knob"),
    (dict(tasks=["smnist"], overrides=[]), ValueError, "task 'smnist' has a fixed length"),
    (dict(eval_lengths=["4"]), ValueError, "eval length 4 is shorter than the training length 8"),
    (dict(eval_lengths=["x0"]), ValueError, "invalid eval length 'x0'"),
    (dict(train_lengths=[0]), ValueError, "--train-lengths"),
    (dict(tasks=None, preset="selective_copy_small", overrides=["task.bogus=1"]), TypeError, "bogus"),
    (dict(overrides=MICRO + ["task.bogus=1"]), ValueError, "no task of .* has a field 'bogus'"),
    (dict(mixers=["rmt"], overrides=MICRO + ["mixer.segment_len=8"]), ValueError,
     r"'mixer.rmt.segment_len': 8 is not shorter than the task's training sequences \(8 tokens\)"),
], ids=lambda v: str(v)[:40])
def test_spec_errors_before_training(bad, error, message):
    with pytest.raises(error, match=message):
        micro_spec(**bad).plan()


@pytest.mark.parametrize("text", ["1", "2/2", "-1/2", "a/b", "1/0"])
def test_malformed_shard(text):
    with pytest.raises(ValueError, match="invalid --shard"):
        parse_shard(text)


def test_cells_and_shards_cover_the_grid_once():
    spec = micro_spec()
    cells = spec.cells(spec.plan())
    assert len(cells) == 2 * 2 * 2 * 2 + 2 and len({c.key for c in cells}) == len(cells)
    assert Cell("s4d", "copy_memory", 8, 1).key == "copy_memory-L8-s4d-seed1" and Cell("lstm").key == "speed-lstm"
    shards = [micro_spec(shard=(k, 3)).shard_cells(cells) for k in range(3)]
    assert sorted(c.key for s in shards for c in s) == sorted(c.key for c in cells)


def test_default_spec_is_the_embedded_sweep():
    spec = CompareSpec(mixers=DEFAULT_MIXERS)
    plan = spec.plan()
    assert spec.preset_name == DEFAULT_PRESET and sorted(plan) == [("induction_heads", 32), ("induction_heads", 64)]
    assert spec.eval_lengths_for(64, "induction_heads") == [128, 256, 512, 1024]  # 16x the training length
    for (_, L), runs in plan.items():
        assert {r.task_cfg["length"] for r in runs.values()} == {L}
        assert len({(r.train.steps, r.train.batch_size) for r in runs.values()}) == 1  # the same budget
    assert max(spec.speed_lengths) >= 16384


def test_tokens_budget_rule_holds_tokens_per_step():
    plan = micro_spec(budget_rule="tokens", train_lengths=[8, 16]).plan()
    assert plan["copy_memory", 8]["s4d"].train.batch_size == 2 * plan["copy_memory", 16]["s4d"].train.batch_size


def test_quadratic_fit_is_exact_for_quadratics():
    f = quadratic_fit([(64, 3 + 2 * 64 + 0.5 * 64**2), (128, 3 + 2 * 128 + 0.5 * 128**2),
                       (256, 3 + 2 * 256 + 0.5 * 256**2)])
    assert math.isclose(f(4096), 3 + 2 * 4096 + 0.5 * 4096**2)


def test_saved_bytes_counts_each_saved_storage_once():
    a = torch.randn(1000, requires_grad=True)
    b = torch.randn(1000, requires_grad=True)
    # mul saves a and b (4000 bytes each), exp saves its output (4000)
    assert saved_bytes(lambda: (a * b).exp()) == 12_000
    assert saved_bytes(lambda: (a * b).exp(), exclude={b.untyped_storage().data_ptr()}) == 8_000
    with torch.no_grad():
        assert saved_bytes(lambda: (a * b).exp()) == 0


def test_readme_block_regenerates_the_tables(grid):
    out, _, _ = grid
    block = readme_block(out / "report" / "results.json")
    assert block.startswith("<!-- generated by: ssmkit compare --readme-table")
    assert markdown(load_results(out / "report" / "results.json")) in block


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


def test_published_rows_only_for_the_papers_setting():
    full = {"n_noise": 4096, "n_copy": 16, "vocab_size": 16}
    rows = published_for("selective_copy", full, ["mamba", "s4d", "s4"])
    assert {r.mixer for r in rows} == {"mamba", "s4"} and all(r.source for r in rows)
    assert published_for("selective_copy", {**full, "n_noise": 32}, ["mamba"]) == []
    assert all(p.source and p.model for p in PUBLISHED)


def test_speed_and_memory_are_measured_on_the_training_call_with_the_gaps():
    from ssmkit.tasks import create_task

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(1, 4)

        def forward(self, inputs, mask=None, dt=None):
            seen.append(dt is not None)
            return self.head(inputs).mean(1)

    task = create_task("irregular_sines", length=8, n_train=8, n_eval=8)
    measure.measure_speed(task, Spy(), 4, repeats=1)
    assert seen and all(seen)  # an irregular task's model runs with Batch.dt, as in training
