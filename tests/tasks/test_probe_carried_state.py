"""scripts/probe_carried_state.py, which measured the carried-state rows of
docs/recurrent_transformers.md: on a one-step RMT run it reproduces `ssmkit eval`'s bits per
character and finds the carried state exact."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ssmkit.cli.main import main

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "probe_carried_state.py"


def test_probe_matches_eval_and_finds_the_carried_state_exact(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("probe_carried_state", SCRIPT)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    small = ["steps=1", "d_model=8", "n_layers=1", "batch_size=2", "eval_batch_size=64", "progress=false",
             "task.length=64", "mixer.segment_len=16", "mixer.n_memory=2"]
    argv = ["train", "--task", "doc_lm", "--mixer", "rmt", "--out", str(tmp_path)]
    assert main(argv + [a for kv in small for a in ("--set", kv)]) == 0
    assert main(["eval", "--checkpoint", str(tmp_path), "--set", "task.length=1024", "--weights", "final"]) == 0
    evaluated = float(re.search(r"test bits_per_token ([\d.]+)", capsys.readouterr().out).group(1))
    probe.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"unigram 4\.\d+, bigram 3\.\d+", out)
    # eval sums each batch's cross-entropy in float32, the probe in float64: equal to ~1e-5 relative
    assert abs(float(re.search(r"1024: ([\d.]+)", out).group(1)) - evaluated) < 2e-4 * evaluated
    assert "max rel diff 0.0e+00" in out  # one call == 32 calls with the memory carried
    sizes = [float(v) for v in re.search(r"\|M\| after segments [\d,]+: (.*)", out).group(1).split()]
    assert len(sizes) == 7 and all(v > 0 for v in sizes)
