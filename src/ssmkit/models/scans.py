"""Scan orders over a 2-D grid of patch tokens: how 1-D sequence mixers read an image.

A ``ScanMixer`` sits in a residual ``Block`` in place of a single mixer and maps
x (B, L, D) -> y (B, L, D), where the L tokens are the h x w patches in row-major order (plus, for
``vim``, one class token in the middle). Orders (docs/vision.md):

- ``raster``: one causal mixer over the row-major sequence (a pixel sequence when patch = 1);
- ``vim``: Vision Mamba (Zhu et al. 2024): the row-major sequence read forward and, by a second
  copy of the mixer, backward (``layers.Bidirectional``, outputs added);
- ``cross``: VMamba's SS2D cross-scan (Liu et al. 2024): row-major, column-major and both reversed,
  each with its own mixer; every output is mapped back to its 2-D position and the four are summed;
- ``s4nd``: the S4ND layer's 2-D convolution over the grid (``S4ND.forward_2d``).

The scans other than ``raster`` are not causal: each token sees the whole image, so there is no
streaming state and no ``step``.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..layers import Bidirectional, create_mixer

SCANS = ("raster", "vim", "cross", "s4nd")


class ScanMixer(nn.Module):
    """(B, L, D) -> (B, L, D) over an h x w token grid read in the order ``scan``.

    ``dirs`` holds the mixers: raster and s4nd one mixer, vim one ``Bidirectional`` (row-major),
    cross two ``Bidirectional`` (row-major, then column-major), i.e. four directions.
    """

    def __init__(self, scan: str, name: str, d_model: int, grid: tuple[int, int], extra_tokens: int = 0,
                 **cfg: Any) -> None:
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"invalid scan {scan!r}; expected one of {SCANS}")
        self.scan, self.grid, self.extra_tokens = scan, grid, extra_tokens
        h, w = grid
        if scan == "s4nd" and name != "s4nd":
            raise ValueError(f"scan 's4nd' runs the S4ND layer's 2-D kernel; it needs mixer 's4nd', got {name!r}")
        if name == "s4nd":
            if scan not in ("s4nd", "raster"):
                raise ValueError(f"mixer 's4nd' is a 2-D layer over the raster order; use scan 's4nd' (its 2-D "
                                 f"kernel) or 'raster', not {scan!r}")
            for key, v in (("height", h), ("width", w)):  # this grid, not S4ND's default 32 x 32 image
                if cfg.get(key, v) != v:
                    raise ValueError(f"mixer.{key}={cfg[key]} does not match the {h} x {w} patch grid")
            cfg = {**cfg, "height": h, "width": w}
        if scan in ("s4nd", "raster"):
            mixers = [create_mixer(name, d_model, **cfg)]
        else:
            mixers = [Bidirectional(name, d_model, **cfg) for _ in range(1 if scan == "vim" else 2)]
        self.dirs = nn.ModuleList(mixers)

    accepts_dt = False  # pixels are a regular grid: no per-token time deltas

    def forward(self, x: Tensor, state: Any = None, mask: Tensor | None = None, *, dt: Tensor | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, None]:
        """x (B, h*w [+ extra_tokens], D) -> y of the same shape; ``state``, ``mask`` and ``dt`` must be
        None (a whole image per call)."""
        if state is not None or mask is not None or dt is not None:
            raise ValueError(f"scan {self.scan!r} reads whole images: state, mask and dt must be None")
        h, w = self.grid
        L = h * w + self.extra_tokens
        if x.dim() != 3 or x.shape[1] != L:
            raise ValueError(f"scan {self.scan!r} expects x (B, {L}, D) ({h} x {w} patches"
                             f"{f' + {self.extra_tokens} class token' if self.extra_tokens else ''}), "
                             f"got {tuple(x.shape)}")
        B, _, D = x.shape
        if self.scan in ("raster", "vim"):
            y = self.dirs[0](x)
        elif self.scan == "s4nd":
            y = self.dirs[0].forward_2d(x.view(B, h, w, D)).reshape(B, L, D)
        else:
            rows, cols = self.dirs
            xt = x.view(B, h, w, D).transpose(1, 2).reshape(B, L, D)  # column-major order
            y_cols = cols(xt).view(B, w, h, D).transpose(1, 2).reshape(B, L, D)  # back to row-major positions
            y = rows(x) + y_cols
        return (y, None) if return_state else y

    def state_size_at(self, length: int) -> int:
        """Floats of state the directions carry after scanning the whole grid. The image fixes the
        number of tokens (h*w [+ class token]), so ``length`` (e.g. the task's pixel count) is ignored."""
        L = self.grid[0] * self.grid[1] + self.extra_tokens
        total = 0
        for m in self.dirs:
            parts = (m.fwd, m.bwd) if isinstance(m, Bidirectional) else (m,)
            total += sum(p.state_size_at(L) for p in parts)
        return total

    @property
    def state_size(self) -> int:
        return self.state_size_at(0)
