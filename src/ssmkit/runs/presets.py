"""Named presets: the published setups as Python functions ``preset(mixer) -> RunConfig``.

Presets are one ``ssmkit.registry.Registry`` (``PRESETS``). Each gives the task, model and
training numbers of a paper's experiment, with the source of every number in ``RunConfig.source``.
``mixer`` replaces the paper's mixer (a hybrid, one name per layer, sets the depth); a preset's
mixer settings (e.g. the state size) are kept only where a mixer of the stack has those fields.
What ssmkit's backbone cannot reproduce (S4's BatchNorm, post-norm and bidirectional layers) is
said in the preset's docstring; everything else can be changed with ``--set key=value``.
"""
from __future__ import annotations

from typing import Any, Callable

from ..layers import get_mixer_class
from ..models import BackboneConfig
from ..models.mixer_stack import Mixer, config_fields, distinct, normalize_mixer
from ..registry import Registry
from ..training import TrainConfig
from .config import RunConfig, check_run

Preset = Callable[[Mixer | None], RunConfig]
PRESETS: Registry[Preset] = Registry("preset")


def register_preset(name: str) -> Callable[[Preset], Preset]:
    """``@register_preset("name")`` on ``preset(mixer) -> RunConfig``."""
    return PRESETS.register(name)


def list_presets() -> list[str]:
    return PRESETS.names()


def preset_summary(name: str) -> str:
    """The first line of the preset's docstring."""
    return (PRESETS.get(name).__doc__ or "").strip().splitlines()[0]


def get_preset(name: str, mixer: Mixer | None = None) -> RunConfig:
    """The preset ``name`` with ``mixer`` in place of the paper's (None: the paper's)."""
    run = PRESETS.create(name, mixer)
    check_run(run)
    return run


def mixer_settings(mixer: Mixer, **wanted: Any) -> dict[str, Any]:
    """The entries of ``wanted`` that a mixer of the stack has (d_state for SSMs, not for attention)."""
    fields = {f for name in distinct(normalize_mixer(mixer)) for f in config_fields(name)}
    return {k: v for k, v in wanted.items() if k in fields}


def backbone(mixer: Mixer, **fields: Any) -> BackboneConfig:
    """The preset's ``BackboneConfig`` with ``mixer`` in every layer; a hybrid (one name per layer)
    sets the depth instead of ``n_layers``."""
    mixer = normalize_mixer(mixer)
    if not isinstance(mixer, str):
        fields["n_layers"] = len(mixer)
    return BackboneConfig(mixer=mixer, **fields)


# ---------------------------------------------------------------- ssmkit's own small setups


@register_preset("copy_memory_demo")
def copy_memory_demo(mixer: Mixer | None = None) -> RunConfig:
    """ssmkit's demo (the default of `ssmkit train`): copy memory, delay 20, 2 layers of width 64, 300 steps."""
    return RunConfig(
        task="copy_memory", task_cfg={"delay": 20},
        model=backbone(d_model=64, n_layers=2, mixer=mixer or "s4d"),
        train=TrainConfig(steps=300, batch_size=32, lr=3e-3),
        source="ssmkit demo (no paper)",
    )


@register_preset("selective_copy_small")
def selective_copy_small(mixer: Mixer | None = None) -> RunConfig:
    """ssmkit's default comparison: Mamba's selective copying at L=136 (4 tokens among 128 noise), 1000 steps of 32."""
    # Sized so that the four default mixers finish in < 10 minutes on 2 CPU cores. lr 1e-2 for every
    # parameter: at 3e-3 Mamba had not left its initial plateau after 300 steps; at 1e-2 it leaves it
    # after 300-400 steps and reaches 100 % by step 1000 (seeds 0 and 1), while s4d stops near 76 %.
    return RunConfig(
        task="selective_copy", task_cfg={"n_noise": 128, "n_copy": 4, "vocab_size": 16, "n_eval": 500},
        model=backbone(d_model=64, n_layers=2, mixer=mixer or "mamba"),
        train=TrainConfig(steps=1000, batch_size=32, lr=1e-2, ssm_lr=1e-2, weight_decay=0.0,
                          eval_batch_size=500, log_every=100),
        source="ssmkit: Mamba's selective copying (Gu & Dao 2023, E.1) at length 136 instead of 4128",
    )


@register_preset("induction_heads_sweep")
def induction_heads_sweep(mixer: Mixer | None = None) -> RunConfig:
    """ssmkit's default comparison: Mamba's induction heads (vocab 16) at short lengths, 2 layers x 64, 1200 steps of 32."""
    # The compare default sweeps training lengths 32 and 64 and scores every model up to 16x its
    # training length (benchmarks.grid.SWEEPS), following the Mamba paper's induction-heads
    # extrapolation (trained at 256, tested to 2^20) at a size that fits 2 CPU cores in minutes.
    # lr 1e-2 for the recurrent families; attention diverges from the task at 1e-2 and learns at
    # 1e-3 (the Mamba paper also gives attention a lower lr than Mamba on this task). Measured
    # (seed 0, 1200 steps): at L = 64 mamba and lstm reach 100 %, attention 88 %, s4d stays at
    # chance; at L = 32 every family learns, and only mamba and lstm stay near 100 % at 16x.
    lr = 1e-3 if mixer == "attention" else 1e-2
    return RunConfig(
        task="induction_heads", task_cfg={"length": 64, "vocab_size": 16, "n_eval": 256},
        model=backbone(d_model=64, n_layers=2, mixer=mixer or "mamba"),
        train=TrainConfig(steps=1200, batch_size=32, lr=lr, ssm_lr=lr, weight_decay=0.0, eval_batch_size=256,
                          log_every=200),
        source="ssmkit: Mamba's induction heads (Gu & Dao 2023, E.1 and Table 2) at lengths 32-64 instead of 256",
    )


# The Transformers that regain recurrence at the size of these small comparisons: windows, segments,
# memories and blocks of 32 tokens, so a 128-token window spans four of them and what lies further
# back must be carried by the recurrence (memory, state vectors, memory tokens), not by the window.
WINDOWS_32: dict[str, dict[str, Any]] = {
    "swa": {"window": 32}, "transformer_xl": {"segment_len": 32, "mem_len": 32},
    "infini_attention": {"segment_len": 32}, "block_recurrent": {"block_len": 32}, "rmt": {"segment_len": 32},
}


def window_settings(mixer: Mixer, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``mixer_cfg`` holding ``table``'s settings for the mixers of the stack (per name in a hybrid)."""
    mixer = normalize_mixer(mixer)
    if isinstance(mixer, str):
        return dict(table.get(mixer, {}))
    return {name: dict(table[name]) for name in distinct(mixer) if name in table}


@register_preset("doc_lm_sweep")
def doc_lm_sweep(mixer: Mixer | None = None) -> RunConfig:
    """ssmkit's long-context comparison: character LM on Shakespeare's scenes, 128-character windows scored to 1,024, 2 x 64, 300 steps of 16."""
    # The sweep (benchmarks.grid.SWEEPS) trains at 128 characters and scores every model with windows
    # of 256, 512 and 1,024 (bits per character vs context; the state is reset at every scene). One
    # lr, 3e-3, for every family: the char-LM default of ssmkit train. Sized for 2 CPU cores in minutes.
    mixer = mixer or "transformer_xl"
    return RunConfig(
        task="doc_lm", task_cfg={"corpus": "shakespeare", "length": 128},
        model=backbone(d_model=64, n_layers=2, mixer=mixer, mixer_cfg=window_settings(mixer, WINDOWS_32)),
        train=TrainConfig(steps=300, batch_size=16, lr=3e-3, eval_batch_size=64, log_every=100),
        source="ssmkit: the Transformer-XL / RMT setting (segment memory within a document) at a CPU size",
    )


@register_preset("rigid_body_rollout")
def rigid_body_rollout(mixer: Mixer | None = None) -> RunConfig:
    """The volume-preserving Transformer's test at a CPU size: rigid body, 32-state windows, 480-step roll-outs, 2 x 32, 1000 steps of 32."""
    # Brantner et al. 2023 train VPT, a standard Transformer and an LSTM on rigid-body trajectories
    # and compare long roll-outs; here every mixer fills the same residual stack (the paper's VPT has
    # no add connection around its attention: the vpt mixer keeps that inside the layer). VPT's
    # window T = 16 (the paper's sequence lengths are of this order).
    return RunConfig(
        task="rigid_body", task_cfg={"length": 32},
        model=backbone(d_model=32, n_layers=2, mixer=mixer or "vpt"),
        train=TrainConfig(steps=1000, batch_size=32, lr=3e-3, weight_decay=0.0, eval_batch_size=256, log_every=250),
        source="ssmkit: the VPT paper's rigid body (Brantner, de Romemont, Kraus, Li 2023) at a CPU size",
    )


# ---------------------------------------------------------------- S4 on LRA (Gu, Goel & Re, ICLR 2022)

_S4_SOURCE = ("S4 (Gu, Goel & Re 2022), Table 11 / state-spaces/s4 configs/experiment/lra/s4-lra-{}.yaml; "
              "ssmkit differs: pre-norm LayerNorm instead of BatchNorm, causal layers instead of bidirectional")


def _s4_lra(task: str, file: str, mixer: Mixer | None, *, d_model: int, n_layers: int, batch_size: int,
            epochs: int, lr: float, weight_decay: float, ssm_lr: float, warmup_fraction: float,
            dt_min: float, pool: str, task_cfg: dict[str, Any] | None = None) -> RunConfig:
    mixer = mixer or "s4"
    return RunConfig(
        task=task, task_cfg=task_cfg or {},
        model=backbone(d_model=d_model, n_layers=n_layers, mixer=mixer, norm="layernorm", dropout=0.0,
                             mixer_cfg=mixer_settings(mixer, d_state=64, dt_min=dt_min, dt_max=0.1)),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, ssm_lr=ssm_lr,
                          warmup_fraction=warmup_fraction, eval_every=0),
        pool=pool, source=_S4_SOURCE.format(file),
    )


@register_preset("s4_lra_listops")
def s4_lra_listops(mixer: Mixer | None = None) -> RunConfig:
    """S4 on LRA ListOps: 8 layers x 128, N=64, lr 0.01 (SSM 0.001), wd 0.05, batch 50, 40 epochs (paper: 59.60 %)."""
    # cosine_warmup: 1000 warmup steps of 80,000 (configs/scheduler/cosine_warmup.yaml + the experiment file)
    return _s4_lra("listops", "listops", mixer, d_model=128, n_layers=8, batch_size=50, epochs=40, lr=0.01,
                   weight_decay=0.05, ssm_lr=0.001, warmup_fraction=1000 / 80_000, dt_min=0.001, pool="mean")


@register_preset("s4_lra_pathfinder")
def s4_lra_pathfinder(mixer: Mixer | None = None) -> RunConfig:
    """S4 on LRA Pathfinder: 6 layers x 256, N=64, lr 0.004 (SSM 0.001), wd 0.03, batch 64, 200 epochs (paper: 94.20 %)."""
    # 2,500 warmup steps (1 epoch) of 500,000; decoder mode "last"
    return _s4_lra("pathfinder", "pathfinder", mixer, d_model=256, n_layers=6, batch_size=64, epochs=200,
                   lr=0.004, weight_decay=0.03, ssm_lr=0.001, warmup_fraction=2_500 / 500_000, dt_min=0.001,
                   pool="last")


@register_preset("s4_lra_pathx")
def s4_lra_pathx(mixer: Mixer | None = None) -> RunConfig:
    """S4 on LRA Path-X: 6 layers x 256, N=64, lr 0.001 (SSM 0.0005), wd 0.05, batch 16, 50 epochs, dt_min 1e-4 (paper: 96.35 %)."""
    # 50,000 warmup steps (5 epochs) of 500,000; decoder mode "last" (the default of the pathfinder pipeline)
    return _s4_lra("pathx", "pathx", mixer, d_model=256, n_layers=6, batch_size=16, epochs=50, lr=0.001,
                   weight_decay=0.05, ssm_lr=0.0005, warmup_fraction=50_000 / 500_000, dt_min=0.0001,
                   pool="last")


# ---------------------------------------------------------------- Mamba synthetic tasks (Gu & Dao 2023, E.1)

_MAMBA_SOURCE = "Mamba (Gu & Dao 2023), Appendix E.1 Synthetic Tasks"


@register_preset("mamba_selective_copy")
def mamba_selective_copy(mixer: Mixer | None = None) -> RunConfig:
    """Mamba's selective copying: L=4096, 16 tokens, vocab 16; 2 layers x 64; 400K steps, constant lr 1e-4, batch 64."""
    return RunConfig(
        task="selective_copy", task_cfg={"n_noise": 4096, "n_copy": 16, "vocab_size": 16},
        model=backbone(d_model=64, n_layers=2, mixer=mixer or "mamba"),
        # constant lr: no warmup, no decay; one lr for every parameter as in the paper;
        # weight decay is not stated for this task: 0 as in the paper's induction-heads setup
        train=TrainConfig(steps=400_000, batch_size=64, lr=1e-4, ssm_lr=1e-4, weight_decay=0.0,
                          warmup_fraction=0.0, min_lr_ratio=1.0),
        source=_MAMBA_SOURCE + " (Selective Copying)",
    )


@register_preset("mamba_induction_heads")
def mamba_induction_heads(mixer: Mixer | None = None) -> RunConfig:
    """Mamba's induction heads: L=256, vocab 16; 2 layers x 64; batch 8, Adam without wd, constant lr 1e-3 (Mamba) / 2e-4."""
    mixer = mixer or "mamba"
    # Mamba: lr 1e-3, 25 "epochs" of 8,192 steps; attention 2e-4 and 50 epochs; LTI (H3, Hyena) 2e-4 and 10 epochs
    epochs = 25 if mixer == "mamba" else 50 if mixer == "attention" else 10
    lr = 1e-3 if mixer == "mamba" else 2e-4
    return RunConfig(
        task="induction_heads", task_cfg={"length": 256, "vocab_size": 16},
        model=backbone(d_model=64, n_layers=2, mixer=mixer),
        train=TrainConfig(steps=epochs * 8192, batch_size=8, lr=lr, ssm_lr=lr, weight_decay=0.0,
                          warmup_fraction=0.0, min_lr_ratio=1.0, eval_every=8192),
        source=_MAMBA_SOURCE + " (Induction Heads)",
    )


# ---------------------------------------------------------------- Zoology MQAR (Arora et al. 2023)


@register_preset("zoology_mqar")
def zoology_mqar(mixer: Mixer | None = None) -> RunConfig:
    """Zoology MQAR (L=64, 4 pairs, vocab 8192): width 128, 2 layers (attention) / 4 (others), 64 epochs, batch 512, wd 0.1."""
    mixer = mixer or "attention"
    # Zoology sweeps lr over logspace(-4, -2, 4) and reports the best; 2.15e-3 is the third point.
    # AdamW, cosine to 0 without warmup, no gradient clipping, no MLP between mixers.
    return RunConfig(
        task="mqar", task_cfg={"vocab_size": 8192, "input_seq_len": 64, "num_kv_pairs": 4, "power_a": 0.01,
                               "random_non_queries": False, "n_train": 100_000, "n_test": 3_000},
        model=backbone(d_model=128, n_layers=2 if mixer == "attention" else 4, mixer=mixer),
        train=TrainConfig(epochs=64, batch_size=512, lr=10 ** (-4 + 2 * 2 / 3), weight_decay=0.1,
                          warmup_fraction=0.0, grad_clip=0.0),
        source=("Zoology (Arora et al. 2023), HazyResearch/zoology "
                "experiments/iclr24_zoology_figure2/configs.py and config.py (Figure 2)"),
    )


# ---------------------------------------------------------------- vision (arch=vision, docs/vision.md)


def _vision(task: str, mixer: Mixer | None, scan: str, source: str, steps: int) -> RunConfig:
    mixer = mixer or "mamba"
    return RunConfig(
        task=task, task_cfg={"protocol": "values"},
        model=backbone(d_model=64, n_layers=2, mixer=mixer),
        train=TrainConfig(steps=steps, batch_size=64, lr=2e-3, weight_decay=0.05, eval_batch_size=500, log_every=100),
        arch="vision", arch_cfg={"scan": "s4nd" if mixer == "s4nd" else scan, "patch": 4},
        source=source,
    )


@register_preset("smnist_patches")
def smnist_patches(mixer: Mixer | None = None) -> RunConfig:
    """sMNIST as 7x7 = 49 patches of 4x4, Vim scan (bidirectional, middle class token); 2 layers x 64, 600 steps of 64."""
    # Sized for a few CPU minutes per mixer: 38,400 images seen (0.77 epoch of the 50k train split).
    # Mixer s4nd gets scan s4nd (its 2-D kernel), every other mixer the Vim scan.
    return _vision("smnist", mixer, "vim", "ssmkit: Vim's scan (Zhu et al. 2024) on MNIST patches, scaled down "
                   "(Vim: 16x16 patches of 224x224 ImageNet images, 24 layers x 192)", steps=600)


@register_preset("fashion_vision")
def fashion_vision(mixer: Mixer | None = None) -> RunConfig:
    """Fashion-MNIST as 7x7 = 49 patches of 4x4, VMamba cross-scan (four directions); 2 layers x 64, 600 steps of 64."""
    return _vision("sfashion", mixer, "cross", "ssmkit: VMamba's SS2D cross-scan (Liu et al. 2024) on Fashion-MNIST "
                   "patches, scaled down (VMamba: 4x4 patches of 224x224 ImageNet images, hierarchical stages)",
                   steps=600)


# ---------------------------------------------------------------- time series (arch=forecaster, docs/timeseries.md)


@register_preset("forecast_small")
def forecast_small(mixer: Mixer | None = None) -> RunConfig:
    """ssmkit's forecasting demo: El Nino SST, 48 months -> 12, RevIN + direct head, 2 layers x 32, 300 steps."""
    # Sized so that three mixers finish in a few minutes on 2 CPU cores; val every 50 steps picks
    # the weights scored on test (454 training windows: the model overfits after a few hundred steps).
    return RunConfig(
        task="forecast", task_cfg={"series": "elnino"},
        model=backbone(d_model=32, n_layers=2, mixer=mixer or "s4d"),
        train=TrainConfig(steps=300, batch_size=32, lr=3e-3, eval_every=50, log_every=100),
        arch="forecaster", arch_cfg={"head": "last", "revin": "affine"},
        source="ssmkit demo (no paper): statsmodels elnino, seasonal naive baseline m=12",
    )


@register_preset("graph_karate")
def graph_karate(mixer: Mixer | None = None) -> RunConfig:
    """ssmkit: node-sequence graph model (Graph-Mamba style) on Zachary's karate club, 2 labels per club; 2 layers x 32, 100 steps."""
    # Full-graph steps (one graph per batch); degree order, 2-hop mean encoder, bidirectional layers.
    # lr 1e-2: the 4 labelled nodes are fitted within ~50 steps; val (8 nodes) every 10 steps picks the weights.
    return RunConfig(
        task="karate_club", task_cfg={"features": "identity", "n_train_per_class": 2, "n_val": 8},
        model=backbone(d_model=32, n_layers=2, mixer=mixer or "mamba"),
        train=TrainConfig(steps=100, batch_size=1, lr=1e-2, eval_every=10, log_every=50),
        arch="graph", arch_cfg={"order": "degree", "local": "mean", "hops": 2, "bidirectional": True},
        source="ssmkit (no paper): Graph-Mamba (Wang et al. 2024) style model on networkx's karate_club_graph",
    )


# ---------------------------------------------------------------- dense, event, point, video, caption models


def _application(task: str, task_cfg: dict[str, Any], mixer: Mixer, arch: str, arch_cfg: dict[str, Any], source: str,
                 *, d_model: int = 32, n_layers: int = 2, mixer_cfg: dict[str, Any] | None = None, steps: int,
                 batch_size: int = 32, lr: float = 2e-3, eval_every: int, eval_batch_size: int = 250) -> RunConfig:
    """The shared shape of the application presets: AdamW with weight decay 0.05, val every
    ``eval_every`` steps picking the weights scored on test (by the task's metric)."""
    return RunConfig(
        task=task, task_cfg=task_cfg,
        model=backbone(d_model=d_model, n_layers=n_layers, mixer=mixer, mixer_cfg=mixer_cfg or {}),
        train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.05, eval_every=eval_every,
                          eval_batch_size=eval_batch_size, log_every=max(1, eval_every // 2)),
        arch=arch, arch_cfg=arch_cfg, source=source,
    )


@register_preset("segmentation_small")
def segmentation_small(mixer: Mixer | None = None) -> RunConfig:
    """M2NIST-style segmentation (1-3 digits of 14x14 on 32x32, 11 classes): U-Net of cross scans, 3 stages from 16x16 tokens, width 16-64, 800 steps of 32."""
    # Sized for a few CPU minutes per mixer (~0.13-0.19 s a step on one thread at this size).
    # arch.block=conv is the CNN U-Net baseline.
    mixer = mixer or "mamba"
    return _application(
        "mnist_segmentation", {}, mixer, "segmenter",
        {"scan": "s4nd" if mixer == "s4nd" else "cross", "patch": 2, "stages": 3},
        "ssmkit: VM-UNet / U-Mamba (Ruan & Xiang 2024; Ma et al. 2024) scaled down, on M2NIST-style canvases",
        d_model=16, n_layers=1, steps=800, eval_every=200)


@register_preset("events_small")
def events_small(mixer: Mixer | None = None) -> RunConfig:
    """N-MNIST-style event streams (14x14 digits on a 20x20 sensor, 1,024 events each): 2 layers x 32 over raw events, 500 steps of 32."""
    # Mixers that take dt (mamba, s5, lru, ...) read the gaps as their step; the others read the
    # timestamps as features. S4D is one of the latter here: its dt path is its chunked mode, which
    # took 1.6 s a step at d_state 16 against 0.15 s for its FFT mode (measured, one thread).
    # dt_scale 4: the mean gap of these streams is about 0.3 ms, so the mixers' step sees about 1 per event.
    mixer = mixer or "mamba"
    names = distinct(normalize_mixer(mixer))
    time = "dt" if all(get_mixer_class(n).accepts_dt for n in names) and "s4d" not in names else "features"
    return _application(
        "mnist_events", {"digit_size": 14, "threshold": 0.5, "max_events": 1024}, mixer, "event_stream",
        {"time": time, "dt_scale": 4.0},
        "ssmkit: event-camera SSMs (Zubic et al. 2024) on N-MNIST-style streams (Orchard et al. 2015) from MNIST",
        mixer_cfg=mixer_settings(mixer, d_state=16), steps=500, lr=5e-3, eval_every=100)


@register_preset("points_small")
def points_small(mixer: Mixer | None = None) -> RunConfig:
    """3-D shape point clouds (8 classes, 512 points, random pose): PointMamba-style, 32 patches of 16, Hilbert + Trans-Hilbert, 2 layers x 32, 600 steps of 32."""
    # ~0.02-0.04 s a step on one thread (one epoch of 8,000 generated clouds is 250 steps).
    return _application(
        "shapes3d", {}, mixer or "mamba", "point_cloud",
        {"n_groups": 32, "group_size": 16, "orders": ["hilbert", "trans_hilbert"]},
        "ssmkit: PointMamba (Liang et al. 2024) scaled down (ModelNet40: 1,024 points, 64 patches of 32), on generated shapes",
        steps=600, eval_every=150, eval_batch_size=400)


@register_preset("video_small")
def video_small(mixer: Mixer | None = None) -> RunConfig:
    """Moving MNIST at half size (2 digits of 14x14 in 32x32, 10 frames): next-frame prediction, 4x4 patches, Vim scan per frame + causal time, 2 layers x 32, 400 steps of 16."""
    # ~0.4-0.6 s a step on one thread at this size.
    return _application(
        "moving_mnist", {}, mixer or "mamba", "video", {"order": "factorized", "scan": "vim", "patch": 4},
        "ssmkit: VideoMamba-style scans (Li et al. 2024) for next-frame prediction on Moving MNIST "
        "(Srivastava et al. 2015) at half resolution",
        steps=400, batch_size=16, eval_every=100, eval_batch_size=100)


@register_preset("captions_small")
def captions_small(mixer: Mixer | None = None) -> RunConfig:
    """Digit captions (1-4 digits of 14x14 on a 16x64 strip, caption = the digits left to right): image prefix + causal decoder, 2 layers x 32, 2,500 steps of 32."""
    # Captions supervise 1-4 labels per image, so the digits are learnt slowly: measured (mamba and
    # the caption_slots baseline), exact match stays near 5 % for 500 steps and rises from about
    # step 1,000. Validation generates the captions (greedy, the recurrent step after the image
    # prefix) and keeps the weights with the best exact match.
    return _application(
        "digit_captions", {"caption": "digits", "height": 16, "width": 64}, mixer or "mamba", "captioner",
        {"scan": "vim", "patch": 4, "encoder_layers": 1},
        "ssmkit: VL-Mamba / Cobra (Qiao et al. 2024; Zhao et al. 2024) style prefix captioner, scaled down, "
        "on strips of MNIST digits",
        steps=2500, eval_every=500)
