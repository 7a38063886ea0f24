"""bf16=true training for families whose ops refused bf16 activations before their core ran in
float32 under autocast (mamba: short_conv and the C++ selective scan; s4: complex DPLR kernel;
rwkv6: log_w weight dtype): the loop runs, weights stay float32, and the trained model ends close
to the same run in float32."""
import pytest
import torch

from ssmkit.training import TrainConfig, evaluate, fit

from .tiny import QUIET, TinyTask, tiny_model

quiet = dict(log=lambda s: None)


@pytest.mark.parametrize("mixer", ["mamba", "s4", "rwkv6"])
def test_bf16_training_runs_and_tracks_float32(mixer):
    task = TinyTask("lm", n=12)
    losses = {}
    for bf16 in (False, True):
        model = tiny_model(task, d_model=16, mixer=mixer)
        before = evaluate(task, model, "train")["bits_per_token"]
        result = fit(task, model, TrainConfig(steps=15, batch_size=12, lr=2e-2, weight_decay=0.0, bf16=bf16,
                                              **QUIET), **quiet)
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
        losses[bf16] = evaluate(task, model, "train")["bits_per_token"]  # float32 evaluation of the trained weights
        assert torch.isfinite(torch.tensor(result["test_bits_per_token"]))
        assert losses[bf16] < before - 0.1, f"bf16={bf16}: train bits/token {before:.3f} -> {losses[bf16]:.3f}"
    # 15 steps of bf16-rounded gradients (a few 1e-3 relative) move the weights nearly as float32 does.
    assert abs(losses[True] - losses[False]) < 0.1 * losses[False], losses
