"""LRA Pathfinder (32×32, L = 1024) and Path-X (128×128, L = 16384): are the two markers joined by
one dashed curve? (Linsley et al. 2018; Kim et al. 2020; LRA, Tay et al. 2021.)

An image holds two target contours seeded ``seed_distance`` apart, each made of
``contour_length`` short straight paddles separated by gaps of ``2*margin``, ``n_distractors``
contours of ``distractor_length`` paddles, and two circular markers: at the start of one target
contour, and at the end of the same contour (label 1) or of the other one (label 0), so the
distance between the markers carries no information. Contours grow as in ``snakes2.py`` of
github.com/drewlinsley/pathfinder (the generator LRA used): each paddle's direction is drawn on
a circle with weight ``cos(min(continuity*|turn|, pi/2))**2`` (higher continuity, straighter
curves) among the directions where its footprint stays clear of everything already drawn but
the paddle it continues; the image border counts as drawn. Paddles and markers are antialiased
by supersampling (``antialias``² samples per pixel, box filter); paddles have intensity
``contrast`` against the markers' 1, and the image is scaled to a maximum of 255 (as the
original's ``imsave`` did). Pixel (r, c) is centred at (r, c).

Where this differs from ``snakes2.py`` (each choice keeps the task's definition and makes the
generator fast enough to build LRA-sized sets on a CPU): pivots are whole pixels and directions
come from a fixed set of about one per pixel of arc, so every step's footprint and ink is a
precomputed stencil; a step's footprint covers the centre line through the gaps, so contours
never cross or touch (the original's masks left the gaps open); colliding directions are
excluded exactly instead of redrawn three times; and a contour that cannot grow gives back up to
``_MAX_BACKTRACKS`` paddles before the attempt restarts (the original restarted the pair, which
succeeds for only a few percent of Path-X attempts).

Image ``i`` of a split is a pure function of (``seed``, split, ``i``); its label is ``i % 2``, so
every split is balanced. Splits are generated in chunks of ``_CHUNK`` images by ``workers``
processes (each chunk cached, so an interrupted run resumes), assembled into one uint8 array per
split and memory-mapped (Path-X's 200k images are 3.3 GB).

Two input protocols (``protocol``): ``real`` feeds (B, L, 1) floats ``(v/255 - 0.5)/0.5`` as in the
S4-family papers; ``tokens`` feeds the 256 grey levels as token ids, as the LRA Transformer did.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from ..config import build_config, check
from .base import SPLITS, Batch, Task, TaskInfo, register_task, split_generator
from .cache import cache_path, cached_memmap, load_arrays, save_arrays

log = logging.getLogger(__name__)

PROTOCOLS = ("real", "tokens")
_MAX_PADDLE_RETRIAL = 2  # redraws of a seed paddle (snakes2.py's default)
_MAX_DISTRACTOR_RETRIAL = 4  # snakes2.py's default
_MAX_BACKTRACKS = 8  # paddles a growing contour may give back before the attempt is abandoned
_MAX_PAIR_TRIALS = 500  # the original retried forever; a bound turns impossible settings into an error
_CHUNK = 1000  # images per resumable generation chunk
_GENERATOR_VERSION = 1  # part of the cache key: bump when the drawing changes


@dataclasses.dataclass
class PathfinderConfig:
    """Defaults: LRA's Pathfinder-32 settings (``PathXConfig`` holds Path-X's)."""

    size: int = 32  # image side; L = size**2
    padding: int = 1  # border kept free of paddles
    paddle_length: float = 2.0
    paddle_margins: tuple[int, ...] = (1,)  # gap is 2*margin; one margin drawn per image
    paddle_thickness: float = 0.5
    marker_radius: float = 1.5
    contour_length: int = 14  # paddles per target contour (LRA's hard split)
    distractor_length: int = 4  # contour_length // 3
    n_distractors: int = 5  # 20 // distractor_length
    seed_distance: float = 7.0  # distance between the two target seeds
    continuity: float = 1.0
    antialias: int = 2  # supersampling factor per axis
    contrast: float = 1.5  # paddle intensity (LRA: snake contrast 2 x paddle contrast 0.75)
    protocol: str = "real"
    workers: int = 0  # processes generating chunks on first use; 0 = one per CPU core
    n_train: int = 160_000  # LRA's 200k images split 80/10/10
    n_val: int = 20_000
    n_test: int = 20_000
    seed: int = 0  # the data set's seed (the run's seed only shuffles training batches)

    FIXED_LENGTH: ClassVar[str] = "the pixels of one image: size x size, set by the task's 'size'"

    def __post_init__(self) -> None:
        self.paddle_margins = tuple(int(m) for m in self.paddle_margins)
        check(self.size >= 8, "size", f"must be >= 8, got {self.size}")
        check(0 <= self.padding < self.size // 4, "padding", f"must be in [0, size/4), got {self.padding}")
        check(self.paddle_length > 0, "paddle_length", f"must be > 0, got {self.paddle_length}")
        check(len(self.paddle_margins) > 0 and min(self.paddle_margins) >= 1, "paddle_margins",
              f"must be a non-empty list of integers >= 1, got {self.paddle_margins}")
        check(self.paddle_thickness > 0, "paddle_thickness", f"must be > 0, got {self.paddle_thickness}")
        check(self.marker_radius > 0, "marker_radius", f"must be > 0, got {self.marker_radius}")
        check(self.contour_length >= 1, "contour_length", f"must be >= 1, got {self.contour_length}")
        check(self.distractor_length >= 1, "distractor_length", f"must be >= 1, got {self.distractor_length}")
        check(self.n_distractors >= 0, "n_distractors", f"must be >= 0, got {self.n_distractors}")
        check(0 < self.seed_distance < self.size / 2, "seed_distance",
              f"must be in (0, size/2), got {self.seed_distance}")
        check(self.continuity > 0, "continuity", f"must be > 0, got {self.continuity}")
        check(self.antialias >= 1, "antialias", f"must be >= 1, got {self.antialias}")
        check(self.contrast > 0, "contrast", f"must be > 0, got {self.contrast}")
        check(self.protocol in PROTOCOLS, "protocol", f"must be one of {PROTOCOLS}, got {self.protocol!r}")
        check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        for name in ("n_train", "n_val", "n_test"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")

    def generator_settings(self) -> dict[str, Any]:
        """What the images depend on (the cache key): everything but sizes and protocol."""
        skip = {"protocol", "workers", "n_train", "n_val", "n_test"}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        return {**out, "paddle_margins": list(self.paddle_margins), "version": _GENERATOR_VERSION}


@dataclasses.dataclass
class PathXConfig(PathfinderConfig):
    """LRA's Path-X (Pathfinder-128) settings as defaults; the other fields keep Pathfinder-32's."""

    size: int = 128
    paddle_length: float = 5.0
    paddle_margins: tuple[int, ...] = (2, 3)
    paddle_thickness: float = 1.5
    marker_radius: float = 3.0
    seed_distance: float = 20.0
    continuity: float = 1.8
    n_distractors: int = 35 // 4  # 35 // distractor_length
    contrast: float = 0.9


def pathx_settings() -> dict[str, Any]:
    """The fields whose Path-X defaults differ from Pathfinder-32's."""
    x, pf32 = PathXConfig(), PathfinderConfig()
    return {f.name: getattr(x, f.name) for f in dataclasses.fields(PathfinderConfig)
            if getattr(x, f.name) != getattr(pf32, f.name)}


@dataclasses.dataclass
class PathfinderDrawing:
    image: np.ndarray  # (size, size) uint8
    label: int
    contours: list[np.ndarray]  # per contour (n_paddles, 2 ends, 2 (y, x)); the two targets first
    markers: np.ndarray  # (2, 2) marker centres (y, x)


def _direction(theta: np.ndarray | float) -> np.ndarray:
    return np.stack([np.sin(theta), np.cos(theta)], -1)  # (y, x)


def _segment_distance(ys: np.ndarray, xs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points (ys, xs) (broadcast) to the segment a-b."""
    d = b - a
    t = np.clip(((ys - a[0]) * d[0] + (xs - a[1]) * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.hypot(ys - (a[0] + t * d[0]), xs - (a[1] + t * d[1]))


def _coverage(aa: int, ys: np.ndarray, xs: np.ndarray, dist) -> np.ndarray:
    """Fraction of the aa×aa samples of each pixel (centres ys (h, 1), xs (1, w)) where
    ``dist(sample_ys, sample_xs) <= 0``: antialiasing by supersampling with a box filter."""
    off = (np.arange(aa) + 0.5) / aa - 0.5
    sy = (ys + off[None, :]).reshape(-1, 1)
    sx = (xs.reshape(-1, 1) + off[None, :]).reshape(1, -1)
    return (dist(sy, sx) <= 0).reshape(ys.shape[0], aa, xs.shape[1], aa).mean((1, 3))


@dataclasses.dataclass(frozen=True)
class _Stencils:
    """The K possible steps from an integer pivot P, precomputed once per geometry. Step k puts a
    paddle from P + m*u_k to P + (l + m)*u_k and moves the pivot to P + (l + 2m)*u_k (rounded);
    its footprint is the pixels within ``reach`` of the centre line P..P + (l + 2m)*u_k, gaps
    included, so no other contour can pass through a gap. ``foot`` and ``ink`` (the paddle's
    coverage) are on the (2R+1)² pixels centred on P."""

    phi: np.ndarray  # (K,) directions
    u: np.ndarray  # (K, 2)
    R: int
    foot: np.ndarray  # (K, 2R+1, 2R+1) int16
    foot_flat: np.ndarray  # (K, (2R+1)²) float32, for overlap counts as one matrix-vector product
    ink: np.ndarray  # (K, 2R+1, 2R+1) float in [0, 1]
    turn_weight: np.ndarray  # (K, K) weight of step k after step j: cos(min(continuity*turn, pi/2))**2


@functools.lru_cache(maxsize=32)
def _stencils(length: float, margin: int, reach: float, half: float, aa: int, continuity: float) -> _Stencils:
    k = max(8, math.ceil(2 * math.pi * (length + margin)))  # about one direction per pixel of arc
    phi = np.arange(k) * (2 * math.pi / k) - math.pi
    u = _direction(phi)
    R = math.ceil(length + 2 * margin + max(reach, half) + 1)
    ys, xs = np.arange(-R, R + 1, dtype=float)[:, None], np.arange(-R, R + 1, dtype=float)[None, :]
    zero = np.zeros(2)
    foot = np.stack([_segment_distance(ys, xs, zero, (length + 2 * margin) * u[j]) <= reach for j in range(k)])
    paddles = [(margin * u[j], (length + margin) * u[j]) for j in range(k)]
    ink = np.stack([_coverage(aa, ys, xs, lambda y, x, a=a, b=b: _segment_distance(y, x, a, b) - half)
                    for a, b in paddles])
    turn = np.abs((phi[None, :] - phi[:, None] + math.pi) % (2 * math.pi) - math.pi)
    weight = np.cos(np.minimum(turn * continuity, math.pi / 2)) ** 2
    weight[weight < 1e-12] = 0.0
    return _Stencils(phi, u, R, foot.astype(np.int16), foot.reshape(k, -1).astype(np.float32), ink, weight)


@dataclasses.dataclass
class _Contour:
    steps: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (row, col, k) per paddle
    pivots: list[np.ndarray] = dataclasses.field(default_factory=list)  # pivot before each step, then after


class _Canvas:
    """Occupancy counts of the image: every placed step's footprint adds 1 (removing a step
    subtracts it). A contour's candidate step must not touch any footprint but that of its own
    last step, which shares its pivot. Footprint pixels lie wholly inside the step's centre line
    dilated by the margin (centre within reach = thickness/2 + margin - 1/2): the original's
    "dilated mask > 0.9" test. A reach >= sqrt(2)/2 (true for both LRA settings) makes every
    footprint band 4-connected, which is what keeps two contours from crossing on the pixel grid.

    The grid is padded by ``E`` occupied pixels, so stencil windows never leave it and leaving the
    image is a collision like any other. Coordinates in ``steps`` are padded; pivots are in image
    coordinates."""

    def __init__(self, cfg: PathfinderConfig, margin: int) -> None:
        self.cfg, self.margin, self.size = cfg, margin, cfg.size
        self.reach = cfg.paddle_thickness / 2 + margin - 0.5
        self.half = max(cfg.paddle_thickness / 2, 0.5 / cfg.antialias)  # drawn at least one fine pixel wide
        self.st = _stencils(cfg.paddle_length, margin, self.reach, self.half, cfg.antialias, cfg.continuity)
        S, p, R = cfg.size, cfg.padding, self.st.R
        self.E = E = R + 2
        self.count = np.ones((S + 2 * E, S + 2 * E), dtype=np.int16)
        self.count[E + p : E + S - p, E + p : E + S - p] = 0

    def _add(self, step: tuple[int, int, int], sign: int) -> None:
        y0, x0, k = step
        w = 2 * self.st.R + 1
        self.count[y0 : y0 + w, x0 : x0 + w] += sign * self.st.foot[k]

    def _free(self, c: _Contour) -> tuple[int, int, np.ndarray]:
        """Window corner at the contour's pivot and, per direction, whether that step touches
        nothing but the contour's own last step."""
        R, w = self.st.R, 2 * self.st.R + 1
        pivot = c.pivots[-1]
        y0, x0 = int(pivot[0]) + self.E - R, int(pivot[1]) + self.E - R
        if not (0 <= y0 and 0 <= x0 and y0 + w <= self.count.shape[0] and x0 + w <= self.count.shape[1]):
            return y0, x0, np.zeros(len(self.st.phi), dtype=bool)
        grid = self.count[y0 : y0 + w, x0 : x0 + w].copy()
        if c.steps:  # the last step overlaps its successor by construction
            ly, lx, lk = c.steps[-1]
            dy, dx = ly - y0, lx - x0  # |dy|, |dx| < w: the last pivot is one step away
            grid[max(dy, 0) : w + min(dy, 0), max(dx, 0) : w + min(dx, 0)] -= self.st.foot[lk][
                max(-dy, 0) : w - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
        return y0, x0, self.st.foot_flat @ (grid > 0).ravel().astype(np.float32) == 0

    def step(self, rng: np.random.Generator, c: _Contour, continuity: bool = True) -> bool:
        """Add one paddle to ``c`` from its pivot, the direction drawn among the free ones with
        weight cos(min(continuity*turn, pi/2))**2 (uniform for a seed); False when none is free."""
        st = self.st
        w = st.turn_weight[c.steps[-1][2]] if continuity and c.steps else np.ones(len(st.phi))
        y0, x0, free = self._free(c)
        p = np.cumsum(w * free)
        if p[-1] <= 0:
            return False
        k = min(int(np.searchsorted(p, rng.random() * p[-1], side="right")), len(p) - 1)
        l, m = self.cfg.paddle_length, self.margin
        c.steps.append((y0, x0, k))
        c.pivots.append(np.rint(c.pivots[-1] + (l + 2 * m) * st.u[k]))
        self._add(c.steps[-1], +1)
        return True

    def pop(self, c: _Contour) -> None:
        self._add(c.steps.pop(), -1)
        c.pivots.pop()

    def seed(self, rng: np.random.Generator, pivot: np.ndarray | None = None,
             box: tuple[int, int] | None = None) -> _Contour | None:
        """A contour's first paddle from ``pivot`` (or a free pixel, inside ``box`` rows/cols when
        given), in a uniform direction; redrawn at most ``_MAX_PADDLE_RETRIAL`` times."""
        lo, hi = box if box is not None else (0, self.size)
        E = self.E
        for _ in range(1 + _MAX_PADDLE_RETRIAL):
            start = pivot
            if start is None:
                ys, xs = np.nonzero(self.count[E + lo : E + hi, E + lo : E + hi] == 0)
                if not len(ys):
                    return None
                i = rng.integers(len(ys))
                start = np.array([ys[i] + lo, xs[i] + lo], dtype=float)
            c = _Contour(pivots=[start])
            if self.step(rng, c, continuity=False):
                return c
        return None

    def grow(self, rng: np.random.Generator, contours: list[_Contour], n_paddles: int) -> bool:
        """Grow ``contours`` in turn to ``n_paddles`` each. A contour that cannot grow gives back its
        last paddle and tries again, ``_MAX_BACKTRACKS`` times in all; then everything grown here
        is removed and False returned."""
        start = [len(c.steps) for c in contours]
        backtracks = 0
        while True:
            c = min(contours, key=lambda c: len(c.steps))  # the shortest first: contours grow in turn
            if len(c.steps) >= n_paddles:
                return True
            if self.step(rng, c):
                continue
            if backtracks == _MAX_BACKTRACKS or len(c.steps) <= 1:
                for c, n in zip(contours, start):
                    while len(c.steps) > n:
                        self.pop(c)
                return False
            self.pop(c)
            backtracks += 1

    def paddles(self, c: _Contour) -> np.ndarray:
        """(n, 2, 2) start and end (y, x) of each paddle, image coordinates."""
        l, m, u = self.cfg.paddle_length, self.margin, self.st.u
        return np.array([(p + m * u[k], p + (l + m) * u[k]) for p, (_, _, k) in zip(c.pivots, c.steps)])

    def render(self, contours: list[_Contour], markers: np.ndarray) -> np.ndarray:
        """(size, size) uint8: paddles at ``contrast``, markers at 1, scaled to a maximum of 255."""
        cfg, st, E, S = self.cfg, self.st, self.E, self.size
        image = np.zeros(self.count.shape)
        w = 2 * st.R + 1
        for c in contours:
            for y0, x0, k in c.steps:
                view = image[y0 : y0 + w, x0 : x0 + w]
                np.maximum(view, cfg.contrast * st.ink[k], out=view)
        r = cfg.marker_radius
        for centre in markers:
            y0, x0 = (int(math.floor(v - r - 1)) for v in centre)
            y1, x1 = (int(math.ceil(v + r + 1)) for v in centre)
            ys, xs = np.arange(y0, y1 + 1, dtype=float)[:, None], np.arange(x0, x1 + 1, dtype=float)[None, :]
            cov = _coverage(cfg.antialias, ys, xs, lambda y, x: np.hypot(y - centre[0], x - centre[1]) - r)
            view = image[y0 + E : y1 + 1 + E, x0 + E : x1 + 1 + E]
            np.maximum(view, cov, out=view)
        image = image[E : E + S, E : E + S]
        return np.rint(255 * image / image.max()).astype(np.uint8)


def _target_pair(cfg: PathfinderConfig, canvas: _Canvas, rng: np.random.Generator) -> list[_Contour] | None:
    """Two contours seeded ``seed_distance`` apart (the first in the central box the original
    used), grown together; None when they do not fit."""
    lo = int(2 * cfg.seed_distance)
    first = canvas.seed(rng, box=(lo, cfg.size - lo) if lo < cfg.size - lo else None)
    if first is None:
        return None
    angle = math.radians(rng.integers(0, 360))
    second = canvas.seed(rng, pivot=np.rint(first.pivots[0] + cfg.seed_distance * _direction(angle)))
    if second is None:
        return None
    pair = [first, second]
    return pair if canvas.grow(rng, pair, cfg.contour_length) else None


def draw_pathfinder(cfg: PathfinderConfig, rng: np.random.Generator, label: int) -> PathfinderDrawing:
    """One image with its geometry; ``label`` 1 puts both markers on the same contour."""
    margin = cfg.paddle_margins[rng.integers(len(cfg.paddle_margins))]
    for _ in range(_MAX_PAIR_TRIALS):
        canvas = _Canvas(cfg, margin)
        pair = _target_pair(cfg, canvas, rng)
        if pair is not None:
            break
    else:
        raise RuntimeError(f"pathfinder: no room for two target contours after {_MAX_PAIR_TRIALS} trials "
                           f"with {cfg}; use a larger size or shorter contours")
    contours = list(pair)
    for _ in range(cfg.n_distractors):
        for _ in range(1 + _MAX_DISTRACTOR_RETRIAL):
            c = canvas.seed(rng)
            if c is None:
                continue
            if canvas.grow(rng, [c], cfg.distractor_length):
                contours.append(c)
                break
            canvas.pop(c)  # the seed paddle
    geometry = [canvas.paddles(c) for c in contours]
    origin = int(rng.integers(2))
    end = origin if label == 1 else 1 - origin
    markers = np.stack([geometry[origin][0, 0], geometry[end][-1, 1]])
    return PathfinderDrawing(canvas.render(contours, markers), label, geometry, markers)


def image_rng(cfg: PathfinderConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS.index(split), index])


def render_images(cfg: PathfinderConfig, split: str, start: int, stop: int) -> np.ndarray:
    """Images ``start..stop-1`` of a split, (n, size, size) uint8; image i has label i % 2."""
    out = np.empty((stop - start, cfg.size, cfg.size), dtype=np.uint8)
    for i in range(start, stop):
        out[i - start] = draw_pathfinder(cfg, image_rng(cfg, split, i), i % 2).image
    return out


def split_images(cfg: PathfinderConfig, split: str, n: int) -> np.ndarray:
    """The cached (n, size, size) uint8 images of a split (read-only memory map)."""
    keys = [{**cfg.generator_settings(), "split": split, "start": a, "stop": min(a + _CHUNK, n)}
            for a in range(0, n, _CHUNK)]

    def fill(out: np.ndarray) -> None:
        todo = []
        for key in keys:
            path = cache_path("pathfinder-chunk", key)
            try:
                out[key["start"] : key["stop"]] = load_arrays(path, ("images",))["images"]
            except ValueError as e:
                if path.exists():
                    log.warning("%s; regenerating that chunk", e)
                todo.append(key)
        workers = min(cfg.workers or os.cpu_count() or 1, len(todo))

        def done(key: dict[str, Any], images: np.ndarray) -> None:
            save_arrays(cache_path("pathfinder-chunk", key), {"images": images})
            out[key["start"] : key["stop"]] = images
            log.info("pathfinder %dx%d %s: images %d..%d of %d", cfg.size, cfg.size, split,
                     key["start"], key["stop"], n)

        if workers > 1:
            with concurrent.futures.ProcessPoolExecutor(workers) as pool:
                jobs = {pool.submit(render_images, cfg, split, k["start"], k["stop"]): k for k in todo}
                for job in concurrent.futures.as_completed(jobs):
                    done(jobs[job], job.result())
        else:
            for key in todo:
                done(key, render_images(cfg, split, key["start"], key["stop"]))
        for key in keys:  # assembled: the chunks only served resuming
            cache_path("pathfinder-chunk", key).unlink(missing_ok=True)

    return cached_memmap("pathfinder", {**cfg.generator_settings(), "split": split, "n": n},
                         (n, cfg.size, cfg.size), np.uint8, fill)


class Pathfinder(Task):
    """A split is generated (or read from the cache) on first use, so ``info`` is free."""

    def __init__(self, name: str, config_class: type[PathfinderConfig] = PathfinderConfig, **cfg: Any) -> None:
        self.cfg = c = build_config(config_class, cfg)
        self.sizes = {"train": c.n_train, "val": c.n_val, "test": c.n_test}
        self._images: dict[str, np.ndarray] = {}
        tokens = c.protocol == "tokens"
        self.info = TaskInfo(
            name=name, kind="classify", length=c.size**2,
            source="generated (LRA Pathfinder generator spec, Linsley et al. 2018)",
            sizes=dict(self.sizes), n_classes=2, vocab_size=256 if tokens else None, d_input=1,
            notes=f"{c.size}x{c.size}, contour length {c.contour_length}, protocol {c.protocol!r} "
                  + ("(256 grey-level tokens)" if tokens else "(pixels (v/255-0.5)/0.5)"),
        )

    def images(self, split: str) -> np.ndarray:
        """(n, size, size) uint8 images of a split (a read-only memory map); image i has label i % 2."""
        self._check_split(split)
        if split not in self._images:
            self._images[split] = split_images(self.cfg, split, self.sizes[split])
        return self._images[split]

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        images = self.images(split)
        n = self.sizes[split]
        rows = np.arange(n)
        if split == "train":
            rows = torch.randperm(n, generator=split_generator(split, seed, epoch, 0)).numpy()
        for start in range(0, n, batch_size):
            r = np.sort(rows[start : start + batch_size])  # sorted reads from the memory map
            pixels = torch.from_numpy(np.asarray(images[r]).reshape(len(r), -1))
            if self.cfg.protocol == "tokens":
                x = pixels.long()
            else:
                x = ((pixels.float() / 255.0 - 0.5) / 0.5)[..., None]
            yield Batch(x, torch.from_numpy(r % 2))


@register_task("pathfinder", PathfinderConfig)
def pathfinder(**cfg: Any) -> Pathfinder:
    return Pathfinder("pathfinder", **cfg)


@register_task("pathx", PathXConfig)
def pathx(**cfg: Any) -> Pathfinder:
    return Pathfinder("pathx", PathXConfig, **cfg)
