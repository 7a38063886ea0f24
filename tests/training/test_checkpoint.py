"""Checkpoints: resume is bitwise the uninterrupted run (also after SIGKILL); corrupt files are named."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssmkit.training import CheckpointError, TrainConfig, fit, latest_checkpoint, read_checkpoint
from ssmkit.training.checkpoint import MODEL, OPTIMIZER, save_checkpoint

from .tiny import QUIET, TinyTask, resume_config, tiny_model

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


class Interrupted(Exception):
    pass


class InterruptedTask(TinyTask):
    """Raises while fetching training batch number ``limit`` + 1: a run that dies mid-way."""

    def __init__(self, limit: int, **kw) -> None:
        super().__init__(**kw)
        self.left = limit

    def batches(self, split, batch_size, seed=0, epoch=0):
        for batch in super().batches(split, batch_size, seed, epoch):
            if split == "train":
                if self.left == 0:
                    raise Interrupted
                self.left -= 1
            yield batch


def _train(task, cfg, resume=False, init_seed=0):
    model = tiny_model(task, dropout=0.1, seed=init_seed)  # dropout: the RNG state must resume too
    result = fit(task, model, cfg, log=lambda s: None, resume=resume)
    result.pop("train_seconds")
    return model, result


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def test_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    full_model, full = _train(TinyTask("lm", n=8), resume_config(tmp_path / "full"))
    with pytest.raises(Interrupted):
        _train(InterruptedTask(5, kind="lm", n=8), resume_config(tmp_path / "cut"))
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000004"
    torch.manual_seed(99)  # a different RNG state and initialization: all of it must come from the checkpoint
    model, result = _train(TinyTask("lm", n=8), resume_config(tmp_path / "cut"), resume=True, init_seed=5)
    assert result == full
    _assert_same_weights(model.state_dict(), full_model.state_dict())  # the best-val weights
    _, last_full = read_checkpoint(tmp_path / "full" / "step-00000008")
    _, last_cut = read_checkpoint(tmp_path / "cut" / "step-00000008")
    _assert_same_weights(last_cut[MODEL], last_full[MODEL])  # the final weights
    _assert_same_weights(last_cut[OPTIMIZER], last_full[OPTIMIZER])


def test_killed_process_resumes_to_the_same_weights(tmp_path):
    ck = tmp_path / "ck"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE / "resume_worker.py"), str(ck)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (ck / "step-00000004").exists():
        if proc.poll() is not None:
            pytest.fail(f"the training subprocess ended before it was killed: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint at step 4 within 120 s")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(latest_checkpoint(ck).name[5:])
    assert 4 <= killed_at < 8, "the run was killed mid-way"
    model, result = _train(TinyTask("lm", n=8), resume_config(ck), resume=True, init_seed=3)
    ref_model, ref = _train(TinyTask("lm", n=8), resume_config(tmp_path / "ref"))
    assert result == ref
    _assert_same_weights(model.state_dict(), ref_model.state_dict())


def test_loading_never_unpickles(tmp_path, monkeypatch):
    task = TinyTask("classify")
    fit(task, tiny_model(task), TrainConfig(steps=2, checkpoint_dir=str(tmp_path), **QUIET), log=lambda s: None)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    result = fit(task, tiny_model(task), TrainConfig(steps=2, checkpoint_dir=str(tmp_path), **QUIET),
                 log=lambda s: None, resume=True)
    assert result["steps"] == 2


def test_keeps_the_newest_and_leaves_no_temporary_folders(tmp_path):
    task = TinyTask("classify")
    (tmp_path / ".step-00000009.tmp-1").mkdir()  # what a writer killed mid-write leaves
    fit(task, tiny_model(task), TrainConfig(steps=5, checkpoint_dir=str(tmp_path), checkpoint_every=1,
                                            keep_checkpoints=2, **QUIET), log=lambda s: None)
    # the run folder keeps its lock file (the OS lock lives on it); nothing else but the newest checkpoints
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "step-00000004", "step-00000005"]
    meta, _ = read_checkpoint(tmp_path / "step-00000005")
    assert meta["progress"]["step"] == 5 and meta["config"]["keep_checkpoints"] == 2
    assert len(meta["rng"]["torch_cpu"]) == 1 and meta["task"] == "tiny_classify"


def test_shared_tensors_are_stored_once(tmp_path):
    w = torch.randn(4, 3)
    path = save_checkpoint(tmp_path, 1, {MODEL: {"embed": w, "head": w, "tail": w[1:]}},
                           {k: {} for k in ("progress", "config", "rng", "optimizer")}, keep=1)
    meta, files = read_checkpoint(path)
    assert meta["files"][MODEL]["aliases"] == {"head": "embed"}
    assert torch.equal(files[MODEL]["head"], w) and torch.equal(files[MODEL]["tail"], w[1:])
    assert save_checkpoint(tmp_path, 1, {MODEL: {"x": w}}, meta, keep=1) == path  # re-saving a step replaces it
    assert list(read_checkpoint(path)[1][MODEL]) == ["x"]


# ---------------------------------------------------------------- corrupt checkpoints


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("good")
    task = TinyTask("classify")
    fit(task, tiny_model(task), TrainConfig(steps=1, checkpoint_dir=str(root), **QUIET), log=lambda s: None)
    return root / "step-00000001"


def _rewrite_record(path: Path, name: str) -> None:
    """Make state.json agree with a replaced file, so only the file's own content is wrong."""
    import hashlib

    meta = json.loads((path / "state.json").read_text())
    data = (path / name).read_bytes()
    meta["files"][name].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (path / "state.json").write_text(json.dumps(meta))


def _truncate(p):
    f = p / MODEL
    f.write_bytes(f.read_bytes()[:-10])


def _flip(p):
    f = p / OPTIMIZER
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))


def _garbage(p):
    (p / MODEL).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    _rewrite_record(p, MODEL)


def _other_format(p):
    (p / "state.json").write_text(json.dumps({"format": "something-else"}))


CORRUPTIONS = {
    "truncated_weights": (_truncate, [MODEL, "truncated"]),
    "flipped_byte": (_flip, [OPTIMIZER, "SHA-256", "corrupt"]),
    "garbage_safetensors": (_garbage, [MODEL, "not a readable safetensors file"]),
    "broken_json": (lambda p: (p / "state.json").write_text('{"format": '), ["state.json", "not valid JSON"]),
    "missing_json": (lambda p: (p / "state.json").unlink(), ["state.json", "missing"]),
    "missing_weights": (lambda p: (p / MODEL).unlink(), [MODEL, "missing"]),
    "other_format": (_other_format, ["state.json", "not an ssmkit checkpoint"]),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupt_checkpoint_error_names_the_file(good, tmp_path, name):
    damage, words = CORRUPTIONS[name]
    path = tmp_path / good.name
    shutil.copytree(good, path)
    damage(path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_checkpoint_of_another_model_or_task_is_refused(good):
    task = TinyTask("classify")
    with pytest.raises(CheckpointError, match=f"(?s){MODEL} does not fit the model.*size mismatch"):
        fit(task, tiny_model(task, d_model=4), TrainConfig(steps=1, **QUIET), log=lambda s: None, resume=good)
    lm = TinyTask("lm")
    with pytest.raises(CheckpointError, match="checkpoint of task 'tiny_classify', not 'tiny_lm'"):
        fit(lm, tiny_model(lm), TrainConfig(steps=1, **QUIET), log=lambda s: None, resume=good)
    with pytest.raises(FileNotFoundError, match="no step-XXXXXXXX checkpoint"):
        fit(task, tiny_model(task), TrainConfig(steps=1, checkpoint_dir=str(good / "nothing"), **QUIET),
            log=lambda s: None, resume=True)


def _edit_state(path: Path, edit) -> None:
    meta = json.loads((path / "state.json").read_text())
    edit(meta)
    (path / "state.json").write_text(json.dumps(meta))


MALFORMED = {
    "step_text": (lambda m: m.update(step="7"), "field 'step' must be an int >= 0"),
    "progress_list": (lambda m: m.update(progress=[1, 2]), "field 'progress' must be an object"),
    "rng_list": (lambda m: m.update(rng=["x"]), "field 'rng' must be an object"),
    "file_record": (lambda m: m["files"][MODEL].update(bytes="many"), f"field 'files.{MODEL}'"),
    "file_outside": (lambda m: m["files"].update({"../x": m["files"][MODEL]}), "field 'files.../x'"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_state_json_names_the_field(good, tmp_path, name):
    edit, words = MALFORMED[name]
    path = tmp_path / good.name
    shutil.copytree(good, path)
    _edit_state(path, edit)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert "state.json" in str(info.value) and words in str(info.value), str(info.value)


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["rng"].pop("torch_cpu"), "field 'rng.torch_cpu'"),
    (lambda m: m["optimizer"].update(param_groups=3), "field 'optimizer'"),
    (lambda m: m["progress"].update(step="x"), "progress state does not fit"),
    (lambda m: m["rng"].update(torch_cpu=["not base64!"]), "field 'rng'"),
    (lambda m: m["rng"].update(torch_cpu=["AAAA"]), "field 'rng'"),
])
def test_malformed_resume_state_names_the_field(good, tmp_path, edit, words):
    path = tmp_path / good.name
    shutil.copytree(good, path)
    _edit_state(path, edit)
    task = TinyTask("classify")
    with pytest.raises(CheckpointError, match=words):
        fit(task, tiny_model(task), TrainConfig(steps=2, **QUIET), log=lambda s: None, resume=path)
