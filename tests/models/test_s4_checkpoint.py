"""state-spaces/s4's standalone S4D sequence models (example.py's S4Model with models/s4/s4d.py's S4D):
a checkpoint with that code's names and layout, loaded, against the model written out from that code
(the repository is not a package, so its forward is written here from its source: the Vandermonde
kernel, the causal convolution, D, GELU, a width-1 Conv1d + GLU, residual and LayerNorm, mean, decoder)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_rel
from ssmkit.models import SequenceModel
from ssmkit.models.pretrained import load_pretrained

D_IN, H, N, N_OUT, LAYERS = 3, 8, 6, 5, 2


def _checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """example.py's S4Model.state_dict() names and shapes (float32, as it trains), random values near its init."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    sd = {"encoder.weight": r(H, D_IN), "encoder.bias": r(H), "decoder.weight": r(N_OUT, H), "decoder.bias": r(N_OUT)}
    for i in range(LAYERS):
        p = f"s4_layers.{i}."
        sd.update({
            p + "D": r(H, scale=1.0),
            p + "kernel.C": r(H, N // 2, 2, scale=0.7),
            p + "kernel.log_dt": math.log(1e-2) + r(H, scale=1.0),
            p + "kernel.log_A_real": math.log(0.5) + r(H, N // 2),
            p + "kernel.A_imag": math.pi * torch.arange(N // 2, dtype=torch.float64) + r(H, N // 2),
            p + "output_linear.0.weight": r(2 * H, H, 1), p + "output_linear.0.bias": r(2 * H),
            f"norms.{i}.weight": 1 + r(H), f"norms.{i}.bias": r(H),
        })
    return {k: v.float() for k, v in sd.items()}


def _s4d_layer(sd: dict, p: str, u: torch.Tensor) -> torch.Tensor:
    """models/s4/s4d.py's S4D on u (B, L, H): K_l = 2 Re Σ_n C_n (e^{dt A_n} - 1)/A_n e^{dt A_n l},
    y = K * u (causal) + D u, GELU, Conv1d(H, 2H, 1), GLU over channels."""
    L = u.shape[1]
    dt = torch.exp(sd[p + "kernel.log_dt"])[:, None]
    A = torch.complex(-torch.exp(sd[p + "kernel.log_A_real"]), sd[p + "kernel.A_imag"])
    C = torch.view_as_complex(sd[p + "kernel.C"].contiguous()) * (torch.exp(dt * A) - 1) / A
    K = 2 * torch.einsum("hn,hnl->hl", C, torch.exp(dt[..., None] * A[..., None] * torch.arange(L))).real  # (H, L)
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # t - s
    T = torch.where(lag >= 0, K[:, lag.clamp(min=0)], 0.0)  # (H, L, L) Toeplitz: y_t = Σ_{s<=t} K_{t-s} u_s
    y = torch.einsum("hts,bsh->bth", T, u) + u * sd[p + "D"]
    z = F.gelu(y) @ sd[p + "output_linear.0.weight"][:, :, 0].T + sd[p + "output_linear.0.bias"]
    return z[..., :H] * torch.sigmoid(z[..., H:])


def _s4model(sd: dict, x: torch.Tensor, prenorm: bool) -> torch.Tensor:
    """example.py's S4Model.forward (eval mode: dropout is the identity), in float64."""
    sd = {k: v.double() for k, v in sd.items()}
    h = x @ sd["encoder.weight"].T + sd["encoder.bias"]
    for i in range(LAYERS):
        norm = lambda t: F.layer_norm(t, (H,), sd[f"norms.{i}.weight"], sd[f"norms.{i}.bias"])  # noqa: E731
        z = _s4d_layer(sd, f"s4_layers.{i}.", norm(h) if prenorm else h)
        h = z + h if prenorm else norm(z + h)
    return h.mean(dim=1) @ sd["decoder.weight"].T + sd["decoder.bias"]


@pytest.mark.parametrize("prenorm", [False, True], ids=["postnorm", "prenorm"])
def test_example_checkpoint_computes_as_the_s4_code(tmp_path, prenorm):
    sd = _checkpoint()
    torch.save({"model": sd, "acc": 88.5, "epoch": 7}, tmp_path / "ckpt.pth")
    model = load_pretrained(tmp_path, format="s4", prenorm=prenorm).double()
    assert isinstance(model, SequenceModel) and model.backbone.config.residual == ("pre" if prenorm else "post")
    x = torch.randn(2, 20, D_IN, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = _s4model(sd, x, prenorm)
    assert_close_rel(model(x), expected, 1e-12, "logits")
    other = _s4model(sd, x, not prenorm)  # the flag matters: the other arrangement is far off
    assert (model(x) - other).abs().max() > 1e-3 * expected.abs().max()
    # a bare state dict (no example.py wrapper), and the file named directly
    torch.save(sd, tmp_path / "bare.pt")
    assert torch.equal(load_pretrained(tmp_path / "bare.pt", format="s4", prenorm=prenorm).double()(x), model(x))


def test_refusals_name_the_file_and_reason(tmp_path):
    sd = _checkpoint()
    torch.save({"model": sd}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match=r"ckpt.pth: state-spaces/s4 checkpoints do not record prenorm"):
        load_pretrained(tmp_path, format="s4")
    with pytest.raises(FileNotFoundError, match="no config.json .* format='s4'"):
        load_pretrained(tmp_path)
    full = {k.replace("s4_layers.0.kernel.log_dt", "s4_layers.0.layer.kernel.inv_dt"): v for k, v in sd.items()}
    torch.save(full, tmp_path / "full.pt")
    with pytest.raises(ValueError, match="'s4_layers.0.layer.kernel.inv_dt' belongs to the full S4 block"):
        load_pretrained(tmp_path / "full.pt", format="s4", prenorm=False)
    extra = {**sd, "s4_layers.1.kernel.B": torch.zeros(H, N // 2, 2)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="extra.pt does not match .*\n  unexpected key: s4_layers.1.kernel.B"):
        load_pretrained(tmp_path / "extra.pt", format="s4", prenorm=False)
    with pytest.raises(TypeError, match="only format='s4' takes options"):
        load_pretrained(tmp_path, prenorm=False)
