"""S4ND: Nguyen, Goel, Gu, Downs, Shah, Dao, Baccus, Ré 2022, "S4ND: Modeling Images and Videos as
Multidimensional Signals Using State Spaces" (the 2-D case).

Per channel d, two S4D systems, one per axis (a = 0 along the height, a = 1 along the width),
each with N/2 complex modes, B = 1 and zoh:

    K_a[l] = Re(sum_n 2 C_{a,n} dB_{a,n} dA_{a,n}^l)                  (the S4D kernel, docs/math/s4d.md)
    K[r, c] = K_0[r] K_1[c]                                             (the 2-D kernel: outer product)
    y[r, c] = sum_{i<=r, j<=c} K[r-i, c-j] u[i, j] + D u[r, c]          (causal in both axes)

then GELU, dropout and Linear(D, 2D) + GLU (the S4D head). ``forward_2d`` takes images
x (B, height, width, D) of any size. As a SequenceMixer the layer reads (B, L, D) as the raster
(row-major) scan of a ``height`` x ``width`` image: token t is pixel (t // width, t % width). The
2-D causal support {i <= r, j <= c} only holds pixels that come before (r, c) in raster order, so
the layer is causal along the raster, and a call may cover any stretch of it: L <= height * width
minus what the state has already seen.

State (exact, docs/math/s4nd.md): the image received so far, img (B, height, width, D), zero at
pixels not yet seen, and pos (B,) the number of pixels seen (a float holding an integer). A
forward writes its tokens at pixels pos..pos+L-1, convolves the whole image and reads the outputs
at those pixels; ``step`` sums the kernel against the image for one pixel (O(height width D)).

Modes: ``fft`` (2-D FFT convolution) and ``reference`` (the direct 2-D causal sum over taps).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..core.discretize import discretize_diag
from ..core.init import S4D_KINDS, dt_init, s4d_init
from ..core.vandermonde import vandermonde_kernel
from ..ops.long_conv.fft import next_fast_len
from ..config import check
from .base import MixerConfig, SequenceMixer, check_finite, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class S4NDConfig(MixerConfig):
    d_state: int = 64  # N: real state size per channel and axis (N/2 complex modes, conjugates implicit)
    height: int = 32  # rows of the image a raster sequence scans (L <= height * width)
    width: int = 32  # columns of that image
    init: str = "legs"  # diagonal A of both axes: "legs" | "inv" | "lin" | "real" (S4D inits)
    dt_min: float = 1e-3  # smallest initial step (log-uniform on [dt_min, dt_max] per channel and axis)
    dt_max: float = 1e-1  # largest initial step
    dropout: float = 0.0  # dropout after the GELU, before the output projection
    ssm_lr: float | None = 1e-3  # learning rate of A and dt (None: the optimizer's default)

    @classmethod
    def sized_for_length(cls, cfg: dict[str, Any], length: int) -> dict[str, Any]:
        """A raster of ``length`` tokens fits the image: a square one, side ceil(sqrt(length)), where
        the configured height x width is smaller."""
        height, width = cfg.get("height", cls.height), cfg.get("width", cls.width)
        if height * width >= length:
            return dict(cfg)
        side = math.isqrt(length - 1) + 1
        return {**cfg, "height": max(height, side), "width": max(width, side)}

    def __post_init__(self) -> None:
        n = self.d_state
        check(n >= 2 and n % 2 == 0, "d_state",
              f"must be an even int >= 2 (N/2 complex conjugate pairs), got {n!r}")
        for name in ("height", "width"):
            v = getattr(self, name)
            check(v >= 1, name, f"must be an int >= 1, got {v!r}")
        check(self.init in S4D_KINDS, "init", f"must be one of {S4D_KINDS}, got {self.init!r}")
        check(self.dt_min > 0, "dt_min", f"must be > 0, got {self.dt_min}")
        check(self.dt_max >= self.dt_min, "dt_max", f"must be >= dt_min={self.dt_min}, got {self.dt_max}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("s4nd")
class S4ND(SequenceMixer):
    """2-D S4ND layer over raster sequences (B, L, D) -> (B, L, D); state (img, pos)."""
    cp_refusal = "its state is a 2-D image raster (rows of the image), not a chunk-to-chunk affine state; not implemented"

    Config = S4NDConfig
    config: S4NDConfig
    modes = ("fft", "reference")

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c, H, Nh = self.config, d_model, self.config.d_state // 2
        dtype = torch.get_default_dtype()
        A = s4d_init(c.init, Nh).expand(2, H, Nh)  # axis 0: height, axis 1: width

        def ssm(t: Tensor, lr: float | None = c.ssm_lr) -> nn.Parameter:
            return tag_ssm_param(nn.Parameter(t.to(dtype).contiguous()), lr)

        self.log_dt = ssm(torch.stack([dt_init(H, c.dt_min, c.dt_max) for _ in range(2)]))  # (2, H)
        self.log_A_real = ssm(torch.log(-A.real))  # (2, H, N/2)
        self.A_imag = ssm(A.imag)
        # C ~ CN(0, 1) per axis as in S4D; no weight decay, the model's own learning rate.
        self.C = ssm(torch.view_as_real(torch.randn(2, H, Nh, dtype=torch.complex64)), lr=None)
        self.D = nn.Parameter(torch.randn(H))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(c.dropout)
        self.output_linear = nn.Linear(H, 2 * H)

    # ----------------------------------------------------------------- kernels
    def kernels(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """The two axis kernels K_0 (D, height) and K_1 (D, width)."""
        dt = torch.exp(self.log_dt)[..., None]  # (2, H, 1)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (2, H, N/2)
        dA, dB = discretize_diag(A, torch.ones_like(A), dt, "zoh")
        W = 2 * torch.view_as_complex(self.C.contiguous()) * dB  # conjugate modes folded: 2 Re
        return tuple(vandermonde_kernel(W[a], dA[a], n, log_z=dt[a] * A[a])
                     for a, n in enumerate((height, width)))

    @staticmethod
    def conv2d(u: Tensor, K0: Tensor, K1: Tensor, mode: str) -> Tensor:
        """y[r, c] = sum_{i<=r, j<=c} K0[r-i] K1[c-j] u[i, j]; u (B, R, C, D) -> (B, R, C, D)."""
        B, R, C, D = u.shape
        K = K0[:, :, None] * K1[:, None, :]  # (D, R, C)
        if mode == "reference":
            y = torch.zeros_like(u)
            for i in range(R):
                for j in range(C):
                    y = y + nn.functional.pad(K[:, i, j] * u[:, : R - i, : C - j], (0, 0, j, 0, i, 0))
            return y
        s = (next_fast_len(2 * R - 1), next_fast_len(2 * C - 1))  # no wrap-around in either axis
        uf = torch.fft.rfft2(u.permute(0, 3, 1, 2), s=s)  # (B, D, ., .)
        y = torch.fft.irfft2(uf * torch.fft.rfft2(K, s=s), s=s)[..., :R, :C]
        return y.permute(0, 2, 3, 1)

    def _post(self, y: Tensor, u: Tensor) -> Tensor:
        y = self.dropout(self.activation(y + self.D * u))
        return nn.functional.glu(self.output_linear(y), dim=-1)

    def forward_2d(self, x: Tensor, mode: str | None = None) -> Tensor:
        """Images x (B, height, width, D) of any size -> (B, height, width, D); no state, no mask."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"forward_2d expects x of shape (B, height, width, D={self.d_model}), got {got}")
        if x.numel() == 0:
            raise ValueError(f"empty image: x has shape {tuple(x.shape)} (expected height, width >= 1)")
        self._check_input(x.flatten(1, 2), "x", rank=3)
        if self.check_finite:
            check_finite(x, "x")
        mode = self.resolve_mode(self.mode if mode is None else mode, x)
        K0, K1 = self.kernels(x.shape[1], x.shape[2])
        return self._post(self.conv2d(x, K0, K1, mode), x)

    # ----------------------------------------------------------------- interface
    def _zero_state(self, batch_size, device, dtype) -> tuple[Tensor, Tensor]:
        c = self.config
        kw = {"device": device, "dtype": dtype}
        return torch.zeros(batch_size, c.height, c.width, self.d_model, **kw), torch.zeros(batch_size, **kw)

    @property
    def state_size(self) -> int:
        """The image seen so far: height * width * D floats (and the position)."""
        return self.config.height * self.config.width * self.d_model

    def _forward(self, x: Tensor, state, call: ForwardCall):
        B, L, D = x.shape
        R, C = self.config.height, self.config.width
        img, pos = self.init_state(B, x.device, x.dtype) if state is None else state
        n0 = pos.detach().round().long()
        n = torch.full((B,), L, device=x.device) if call.lengths is None else call.lengths
        self._check_room(n0, n)
        t = torch.arange(L, device=x.device)
        idx = n0[:, None] + t  # (B, L): the raster pixel of each new token
        # Padded tokens go to spare slots past the image, so they never enter it.
        dest = torch.where(t < n[:, None], idx, R * C + t)[..., None].expand(B, L, D)
        flat = torch.cat([img.reshape(B, R * C, D), x.new_zeros(B, L, D)], 1).scatter(1, dest, x)[:, : R * C]
        img = flat.view(B, R, C, D)
        Y = self.conv2d(img, *self.kernels(R, C), call.mode).reshape(B, R * C, D)
        y = Y.gather(1, idx.clamp(max=R * C - 1)[..., None].expand(B, L, D))
        return self._post(y, x), (img, (n0 + n).to(pos.dtype))

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        B, D = x_t.shape
        R, C = self.config.height, self.config.width
        img, pos = state
        n0 = pos.detach().round().long()
        self._check_room(n0, torch.ones_like(n0))
        flat = img.reshape(B, R * C, D).scatter(1, n0[:, None, None].expand(B, 1, D), x_t[:, None])
        img = flat.view(B, R, C, D)
        K0, K1 = self.kernels(R, C)
        # Weights K0[r - i] K1[c - j] for the pixel (r, c) = divmod(n0, C), zero outside i <= r, j <= c.
        a = (n0 // C)[:, None] - torch.arange(R, device=x_t.device)  # (B, R)
        b = (n0 % C)[:, None] - torch.arange(C, device=x_t.device)  # (B, C)
        k0 = torch.where((a >= 0)[..., None], K0.T[a.clamp(min=0)], 0)  # (B, R, D)
        k1 = torch.where((b >= 0)[..., None], K1.T[b.clamp(min=0)], 0)  # (B, C, D)
        y = torch.einsum("bid,bjd,bijd->bd", k0, k1, img)
        return self._post(y, x_t), (img, pos + 1)

    def _check_room(self, n0: Tensor, n: Tensor) -> None:
        R, C = self.config.height, self.config.width
        end = n0 + n
        if torch.compiler.is_compiling():  # a traced graph cannot raise on values (docs/compile.md)
            return
        if bool((end > R * C).any()):
            b = int((end > R * C).nonzero()[0])
            raise ValueError(
                f"s4nd scans a height x width = {R} x {C} image ({R * C} raster positions), but row {b} "
                f"would reach position {int(end[b])} ({int(n0[b])} already seen + {int(n[b])} new tokens); "
                "set height and width to the image size (L <= height * width)"
            )
