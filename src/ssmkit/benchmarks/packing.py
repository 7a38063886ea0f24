"""What a packed row costs (``ssmkit bench --suite packing``, docs/packing.md).

For each mixer and total length L, the CPU time (one thread: a busy shared machine does not move
it, unlike wall time) of one training step (forward + backward of the summed
output, float32, ``auto`` mode), the best of ``repeats`` interleaved runs, of three inputs holding
the same L tokens:
  one document     x (1, L, D): the cost a packed row should match;
  packed           x (1, L, D) with ``cu_seqlens`` of ``docs`` documents of unequal lengths;
  padded           the same documents as the rows of a batch (docs, max length, D) with a mask.
The documents' lengths are proportional to 1, 2, ..., docs (a realistic spread: the longest is
about 2 / (docs + 1) of the row), so padding them wastes about half of the padded batch.
"""
from __future__ import annotations

import dataclasses

import torch

from ..layers import create_mixer
from .timing import cpu_time


@dataclasses.dataclass
class PackingRow:
    mixer: str
    length: int  # L: tokens in the row
    docs: int
    one_s: float  # CPU seconds of one document of L tokens
    packed_s: float  # the packed row of ``docs`` documents
    padded_s: float  # the documents as a padded batch
    mode: str  # the mode auto ran for the packed row, or why the mixer could not run at this length


def document_lengths(L: int, docs: int) -> list[int]:
    """``docs`` lengths proportional to 1..docs summing to L (each >= 1)."""
    if not 1 <= docs <= L:
        raise ValueError(f"docs must be in [1, L={L}], got {docs}")
    total = docs * (docs + 1) // 2
    lengths = [max(1, L * (i + 1) // total) for i in range(docs)]
    lengths[-1] += L - sum(lengths)
    return lengths


def bench_packing(names: list[str], lengths: list[int], docs: int, d_model: int, repeats: int = 3) -> list[PackingRow]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU time of several threads counts their spin-waits on a busy machine
    try:
        return _bench(names, lengths, docs, d_model, repeats)
    finally:
        torch.set_num_threads(threads)


def _bench(names: list[str], lengths: list[int], docs: int, d_model: int, repeats: int) -> list[PackingRow]:
    rows = []
    for name in names:
        torch.manual_seed(0)
        m = create_mixer(name, d_model)
        for L in lengths:
            sizes = document_lengths(L, docs)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, L, d_model, generator=g, requires_grad=True)
            cu = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int32)
            padded = torch.nn.utils.rnn.pad_sequence(list(x.detach()[0].split(sizes)), batch_first=True)
            padded.requires_grad_(True)
            mask = torch.arange(max(sizes))[None] < torch.tensor(sizes)[:, None]

            calls = [lambda: m(x), lambda: m(x, cu_seqlens=cu), lambda: m(padded, mask=mask)]
            best = [float("nan")] * 3
            try:
                for fn in calls:  # warm-up
                    fn().sum().backward()
            except ValueError as e:  # a mixer with a length limit (s4nd's image, hyena's max_len)
                rows.append(PackingRow(name, L, docs, *best, f"not run: {e}"))
                continue
            best = [float("inf")] * 3
            for _ in range(repeats):  # interleaved: a busy machine slows all three alike
                for i, fn in enumerate(calls):
                    best[i] = min(best[i], cpu_time(lambda: fn().sum().backward()))
            mode = m.resolve_mode("auto", x)
            how = "native reset" if mode in m.packed_modes else "documents as rows"
            rows.append(PackingRow(name, L, docs, *best, f"{mode} ({how})"))
    return rows


def format_rows(rows: list[PackingRow]) -> str:
    out = ["| mixer | L | documents | one document CPU ms | packed CPU ms | padded CPU ms | packed / one | padded / one "
           "| packed mode |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.mixer} | {r.length} | {r.docs} | {1e3 * r.one_s:.1f} | {1e3 * r.packed_s:.1f} | "
                   f"{1e3 * r.padded_s:.1f} | {r.packed_s / r.one_s:.2f} | {r.padded_s / r.one_s:.2f} | {r.mode} |")
    return "\n".join(out)


@dataclasses.dataclass
class LMPackingRow:
    mixer: str
    length: int  # L: the windows' length
    kind: str  # "padded" or "packed"
    steps: int
    tokens: int  # real (scored) tokens trained on
    cpu_s: float  # CPU seconds of the training steps (one thread)
    wall_s: float


def bench_lm_packing(names: list[str], length: int, batch_size: int, d_model: int, steps: int,
                     corpus: str = "shakespeare") -> list[LMPackingRow]:
    """Training steps (forward, backward, AdamW) of a 2-layer model on doc_lm's first ``steps``
    training batches, padded and packed (``task.packed``: the same windows without padding), in one
    thread, interleaved step by step; tokens are the real ones either way."""
    import time

    from ..models import BackboneConfig
    from ..tasks import create_task

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        tasks = {k: create_task("doc_lm", corpus=corpus, length=length, packed=k == "packed")
                 for k in ("padded", "packed")}
        for name in names:
            runs = {}
            for kind, task in tasks.items():
                torch.manual_seed(0)
                model = task.build_model(BackboneConfig(d_model=d_model, n_layers=2, mixer=name))
                runs[kind] = (task, model, torch.optim.AdamW(model.parameters(), lr=1e-3),
                              task.batches("train", batch_size, seed=0))
            totals = {k: [0, 0.0, 0.0] for k in runs}
            for i in range(steps + 1):  # step 0 warms up
                for kind, (task, model, opt, batches) in runs.items():
                    batch = next(batches)
                    t0, w0 = time.process_time(), time.perf_counter()
                    opt.zero_grad()
                    task.loss(model(batch.inputs, **batch.model_kwargs()), batch).backward()
                    opt.step()
                    if i:
                        real = batch.inputs.numel() if batch.mask is None else int(batch.mask.sum())
                        acc = totals[kind]
                        acc[0] += real
                        acc[1] += time.process_time() - t0
                        acc[2] += time.perf_counter() - w0
            rows += [LMPackingRow(name, length, k, steps, int(t[0]), t[1], t[2]) for k, t in totals.items()]
    finally:
        torch.set_num_threads(threads)
    return rows


def format_lm_rows(rows: list[LMPackingRow]) -> str:
    out = ["| mixer | L | batches | steps | real tokens | CPU s | tokens per CPU s | wall tokens/s | vs padded |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(p for p in rows if p.mixer == r.mixer and p.length == r.length and p.kind == "padded")
        rate, base_rate = r.tokens / r.cpu_s, base.tokens / base.cpu_s
        out.append(f"| {r.mixer} | {r.length} | {r.kind} | {r.steps} | {r.tokens} | {r.cpu_s:.2f} | {rate:.0f} | "
                   f"{r.tokens / r.wall_s:.0f} | {rate / base_rate:.2f} |")
    return "\n".join(out)
