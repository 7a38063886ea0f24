"""``ssmkit <verb>``: list | check | bench | tasks | train | eval | compare.

The CLI only maps arguments onto library calls: ``ssmkit.runs`` for a run's settings, presets and
checkpoints (tasks, train, eval), ``ssmkit.testing`` for check, and ``ssmkit.benchmarks`` for the
compare and bench verbs only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

import ssmkit
from ssmkit.testing import DEFAULT_LENGTHS, DEFAULT_TOL, check_mixer


def int_list(minimum: int, what: str):
    """An argparse type: comma-separated ints >= ``minimum``, e.g. ``--lengths 256,1024``; a bad item
    is an argparse error naming it and what was expected."""

    def parse(text: str) -> list[int]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        out = []
        for v in items:
            try:
                n = int(v)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{v!r} is not an integer (expected comma-separated {what})") from None
            if n < minimum:
                raise argparse.ArgumentTypeError(f"{n} is out of range (expected {what})")
            out.append(n)
        return out

    return parse


def at_least(minimum: int):
    """An argparse type: one int >= ``minimum``."""

    def parse(text: str) -> int:
        value = int_list(minimum, f"an integer >= {minimum}")(text)
        if len(value) != 1:
            raise argparse.ArgumentTypeError(f"expected one integer >= {minimum}, got {text!r}")
        return value[0]

    return parse


LENGTHS = int_list(1, "lengths >= 1")


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in ssmkit.list_mixers():
        m = ssmkit.create_mixer(name, args.d_model)
        rows.append((name, ",".join(m.modes), m.state_size, sum(p.numel() for p in m.parameters())))
    w_name = max(len("mixer"), *(len(r[0]) for r in rows))
    w_modes = max(len("modes"), *(len(r[1]) for r in rows))
    state = f"state floats (D={args.d_model})"
    print(f"{'mixer':<{w_name}}  {'modes':<{w_modes}}  {state:>{len(state)}}  {'params':>10}")
    for name, modes, size, params in rows:
        print(f"{name:<{w_name}}  {modes:<{w_modes}}  {size:>{len(state)}}  {params:>10}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if args.peers:
        return _check_peers(args)
    names = args.names or ssmkit.list_mixers()
    lengths = args.lengths
    failed = 0
    print(f"{'mixer':<18} {'setting':<22} {'check':<18} {'max rel err':>10}  result   "
          f"(float64, L={','.join(map(str, lengths))}, chunk fields lowered to cross >= 3 chunks, tol={args.tol:g})")
    # The checks run tiny tensors (D=8), where a second intra-op thread only adds synchronization:
    # measured on a busy 2-core machine, 37 s with 2 threads vs 5 s with one for all 23 mixers.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in names:
            for length in lengths:
                for row in check_mixer(name, length=length, tol=args.tol, seed=args.seed):
                    print(row)
                    failed += not row.passed
    finally:
        torch.set_num_threads(threads)
    print(f"\n{'ALL PASS' if not failed else f'{failed} FAILED'} ({len(names)} mixers)")
    return 1 if failed else 0


def _check_peers(args: argparse.Namespace) -> int:
    """``check --peers``: the Triton modes of the ops (ssmkit's and the peers') in float32 against
    the float64 reference (ssmkit.testing.peers); a mode that cannot run here is n/a with its reason."""
    from ssmkit.testing.peers import FLOAT32_TOL, check_peers

    tol = FLOAT32_TOL if args.tol == DEFAULT_TOL else args.tol
    print(f"{'op':<18} {'setting':<22} {'check':<18} {'max rel err':>10}  result   "
          f"(float32 vs the float64 reference, tol={tol:g}, device={args.device})")
    failed = 0
    for length in args.lengths:
        for row in check_peers(args.names or None, length=length, device=args.device, tol=tol, seed=args.seed):
            print(row)
            failed += not row.passed
    print(f"\n{'ALL PASS' if not failed else f'{failed} FAILED'} (n/a: could not run here, with the reason)")
    return 1 if failed else 0


LTI_DEFAULT = ["s4d", "dss", "s4", "s5", "lru"]
SUITES = ("lti", "mixers", "selective", "ssd", "decode", "generate", "compile", "packing", "packing_lm", "gpu")


def cmd_bench(args: argparse.Namespace) -> int:
    from ssmkit.benchmarks import speed
    from ssmkit.io import write_text

    torch.manual_seed(0)
    if args.suite == "gpu":
        return _bench_gpu(args)
    lengths = args.lengths or [1024, 4096, 16384]
    mixers = args.mixers.split(",") if args.mixers else None
    limits = speed.Limits(args.memory_mb, args.row_seconds)
    if args.d_model is None:
        args.d_model = 768 if args.suite == "generate" else 512
    if args.batch is None:
        args.batch = 1 if args.suite == "generate" else 2
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, B={args.batch}, "
              f"D={args.d_model}; suite {args.suite}")
    print(header, flush=True)
    if args.plot:
        if args.suite not in ("lti", "mixers"):
            raise ValueError(f"--plot draws the lti and mixers suites, not {args.suite!r}")
        from ssmkit.benchmarks.plots import require_matplotlib

        require_matplotlib()  # before the measurements, not after them
    notes: list[str] = []
    if args.suite == "lti":
        rows = speed.bench_lti(mixers or LTI_DEFAULT, lengths, args.batch, args.d_model, args.d_state,
                               backward=not args.forward_only, repeats=args.repeats, limits=limits)
        table = speed.format_rows(rows, "fft_conv (bare)")
        _bench_plot(args, rows, "fft_conv (bare)")
    elif args.suite == "mixers":
        names = mixers or [m for m in ssmkit.list_mixers() if m != "attention"]
        rows = speed.bench_mixers(names, lengths, args.batch, args.d_model,
                                  backward=not args.forward_only, repeats=args.repeats, limits=limits,
                                  on_row=lambda r: print(f"  {r}", flush=True))
        table = speed.format_rows(rows, "attention", projections=True)
        notes = [f"{n}: faster than attention from L = {speed.crossover(rows, n, 'attention', not args.forward_only)}"
                 for n in names]
        _bench_plot(args, rows, "attention")
    elif args.suite == "selective":
        from ssmkit.benchmarks.selective_scan import bench_selective_scan, format_rows

        rows = bench_selective_scan(tuple(lengths), B=args.batch, D=args.d_model, N=args.d_state,
                                    backward=not args.forward_only, limits=limits,
                                    on_row=lambda r: print(f"  {r}", flush=True))
        table = format_rows(rows)
    elif args.suite == "ssd":
        from ssmkit.benchmarks.ssd import bench_ssd

        rows = bench_ssd(lengths, args.batch, repeats=args.repeats, limits=limits)
        table = speed.format_rows(rows, "ssmkit ssd chunked")
    elif args.suite == "generate":
        from ssmkit.benchmarks.generate import bench_generate, format_rows

        rows = bench_generate(tuple(mixers or ["mamba", "mamba2"]), args.layers, args.d_model, args.vocab,
                              args.prompt_length, args.new_tokens, args.batch, args.repeats, limits)
        table = format_rows(rows)
    elif args.suite == "compile":
        from ssmkit.benchmarks.compiled import bench_compile, format_rows

        rows = bench_compile(mixers or ["mamba", "mamba2", "s4d", "gla", "lstm"], lengths, args.batch,
                             args.d_model, repeats=args.repeats)
        table = format_rows(rows)
    elif args.suite == "packing":
        from ssmkit.benchmarks.packing import bench_packing, format_rows

        rows = bench_packing(mixers or ssmkit.list_mixers(), lengths, args.docs, args.d_model, args.repeats)
        table = format_rows(rows)
    elif args.suite == "packing_lm":
        from ssmkit.benchmarks.packing import bench_lm_packing, format_lm_rows

        rows = [r for L in lengths for r in bench_lm_packing(mixers or ["mamba"], L, args.batch, args.d_model,
                                                               args.repeats)]
        table = format_lm_rows(rows)
    else:
        rows = speed.bench_decode(mixers or ["mamba", "mamba2"], lengths, d_model=args.d_model, limits=limits)
        lines = ["| mixer | context L | ms per generated token (B=1) | state floats | note |", "|---|---|---|---|---|"]
        for r in rows:
            ms = "-" if r.forward_s is None else f"{1e3 * r.forward_s:.3f}"
            lines.append(f"| {r.name} | {r.length} | {ms} | {r.state_size} | "
                         f"{'skipped: ' + r.skipped if r.skipped else ''} |")
        table = "\n".join(lines)
    text = "\n".join([header, "", table, *([""] + notes if notes else [])]) + "\n"
    print(text[len(header) + 1:])
    out = args.out or f"results/bench-{args.suite}"
    meta = {"suite": args.suite, "lengths": lengths, "batch": args.batch, "d_model": args.d_model,
            "d_state": args.d_state, "torch": torch.__version__, "limits": dataclasses.asdict(limits)}
    md = write_text(f"{out}.md", text)
    js = write_text(f"{out}.json", json.dumps(speed.rows_json(rows, **meta), indent=1) + "\n")
    print(f"written: {md}, {js}")
    return 0


def _bench_gpu(args: argparse.Namespace) -> int:
    """``bench --suite gpu``: the prepared CUDA run (ssmkit.benchmarks.gpu); exit 2 with the reason
    when there is no CUDA device."""
    from ssmkit.benchmarks import gpu

    if args.plot:
        raise ValueError("--plot draws the lti and mixers suites, not 'gpu' (it writes gpu.md)")
    plan = gpu.GpuPlan(lengths=tuple(args.lengths or gpu.DEFAULT_LENGTHS), out=Path(args.out or "results/gpu"),
                       budget_s=args.budget_s, repeats=args.repeats)
    reason = gpu.cuda_unavailable_reason()
    if reason is not None:
        print(f"ssmkit bench --suite gpu: not run: {reason}", file=sys.stderr)
        return 2
    result = gpu.run(plan)
    print(gpu.to_markdown(result))
    print(f"wrote {plan.out / 'gpu.json'} and {plan.out / 'gpu.md'}")
    return 0 if all(r["result"] != "FAIL" for r in result["referee"]) else 1


def _bench_plot(args: argparse.Namespace, rows: list, baseline: str) -> None:
    if not args.plot:
        return
    from ssmkit.benchmarks.plots import bench_curves

    path = Path(args.plot)
    path.parent.mkdir(parents=True, exist_ok=True)
    bench_curves(rows, baseline, path, f"suite {args.suite}, B = {args.batch}, D = {args.d_model}")
    print(f"plot: {path}")


def _run_config(args: argparse.Namespace, legacy: list[str]):
    """The RunConfig of ``train`` / ``eval``: ``runs.resolve_run`` with legacy flags, then --set."""
    from ssmkit.runs import resolve_run

    return resolve_run(args.task, args.mixer, args.preset, legacy + list(args.set))


def _legacy_overrides(args: argparse.Namespace) -> list[str]:
    """The demo's flags (--d-model, --layers, --delay, --steps, --batch-size, --lr, --seed) as overrides."""
    names = {"d_model": "d_model", "layers": "n_layers", "delay": "task.delay", "steps": "steps",
             "batch_size": "batch_size", "lr": "lr", "seed": "seed"}
    return [f"{key}={getattr(args, flag)}" for flag, key in names.items() if getattr(args, flag) is not None]


def _print_metrics(prefix: str, metrics: dict[str, float], task, split: str = "test") -> None:
    """Each metric with its yardstick: chance beside accuracy; on a forecasting task's test split,
    the seasonal naive forecast beside MSE / MAE (scored on the same windows and units)."""
    from ssmkit.tasks import chance_accuracy, naive_baseline

    chance = chance_accuracy(task) if "accuracy" in metrics else None
    naive = naive_baseline(task) if split == "test" else None
    for name, value in metrics.items():
        extra = ""
        if name.endswith("accuracy") and chance is not None:
            extra = f" (chance {chance:.3f})"
        elif naive is not None and f"test_{name}" in naive["metrics"]:
            extra = f" ({naive['name']} {naive['metrics'][f'test_{name}']:.4f})"
        print(f"{prefix}{name} {value:.4f}{extra}")


def cmd_train(args: argparse.Namespace) -> int:
    from ssmkit.runs import build_model, build_task, check_carry_length
    from ssmkit.training import fit

    # --out is the run folder: checkpoints and logs, set before --set so that checkpoint_every and
    # friends validate against it (and an explicit --set checkpoint_dir=... still wins)
    out = [f"checkpoint_dir={args.out}", f"log_dir={args.out}"] if args.out else []
    run = _run_config(args, out + _legacy_overrides(args))
    if args.resume and not run.train.checkpoint_dir:
        raise ValueError("--resume needs a checkpoint folder: give --out DIR (or --set checkpoint_dir=DIR)")
    task = build_task(run)
    check_carry_length(run, task.info.length)  # a segment the training sequences never leave: its state never trains
    torch.manual_seed(run.train.seed)
    model = build_model(task, run)
    info = task.info
    print(f"task {info.name} (L={info.length}; {info.notes}); mixer {run.model.mixer_label()}; "
          f"{sum(p.numel() for p in model.parameters())} parameters" + (f"; {run.source}" if run.source else ""))
    # fit writes run.json beside the checkpoints and in each, so `ssmkit eval` can rebuild the model
    result = fit(task, model, run.train, resume=args.resume, run=run.to_json(), overwrite=args.overwrite)
    if os.environ.get("RANK", "0") != "0":  # under torchrun every process has the result; one prints it
        return 0
    tests = {k.removeprefix("test_"): v for k, v in result.items() if k.startswith("test_")}
    _print_metrics("test ", tests, task)
    print(f"in {result['train_seconds']:.0f} s" + (f"; checkpoints in {run.train.checkpoint_dir}"
                                                   if run.train.checkpoint_dir else ""))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ssmkit.runs import apply_overrides, build_model, build_task, find_checkpoint, read_run
    from ssmkit.training import evaluate, read_checkpoint
    from ssmkit.training.checkpoint import BEST, MODEL, RUN

    step, run_file = find_checkpoint(args.checkpoint)
    if run_file is not None:
        run = apply_overrides(read_run(run_file), list(args.set))
        if args.task and args.task != run.task:
            raise ValueError(f"--task {args.task} but the checkpoint's run ({run_file}) trained task {run.task!r}")
    elif args.task or args.preset:
        run = _run_config(args, [])
    else:
        raise ValueError(f"{step}: no {RUN} in or beside the checkpoint (training.fit writes one for runs it can "
                         "describe); name the task and model with --task/--preset, --mixer and --set")
    meta, files = read_checkpoint(step)
    if meta.get("task") not in (None, run.task):
        raise ValueError(f"{step} is a checkpoint of task {meta.get('task')!r}, not {run.task!r}")
    name = BEST if args.weights == "best" and BEST in files else MODEL
    task = build_task(run)
    model = build_model(task, run)
    try:
        model.load_state_dict(files[name])
    except RuntimeError as e:
        raise RuntimeError(f"{step / name} does not fit the model of {run.task} / {run.model.mixer_label()}: "
                           f"{e}") from None
    if run.train.device != "cpu" and torch.cuda.is_available():
        model.to("cuda" if run.train.device == "auto" else run.train.device)
    print(f"task {run.task}, mixer {run.model.mixer_label()}: {step} "
          f"({'best-val' if name == BEST else 'final'} weights), split {args.split}")
    # The run's own eval batch by default: generated tasks draw their val / test examples batch by
    # batch, so another batch size would score other examples than the run's printed metrics.
    batch_size = args.batch_size or run.train.eval_batch_size
    metrics = evaluate(task, model, args.split, batch_size)
    _print_metrics(f"{args.split} ", metrics, task, args.split)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from ssmkit.runs import list_presets, preset_summary
    from ssmkit.tasks import create_task, list_tasks

    print("| task | kind | train / val / test | L | classes | input | source |\n|---|---|---|---|---|---|---|")
    for name in list_tasks():
        try:
            i = create_task(name).info
        except (ImportError, OSError, RuntimeError, ValueError) as e:  # a missing optional data package
            print(f"| {name} | unavailable: {e} | | | | | |")
            continue
        sizes = " / ".join(f"{i.sizes.get(s, 0):,}" for s in ("train", "val", "test"))
        inputs = f"tokens ({i.vocab_size})" if i.vocab_size else f"{i.d_input} feature(s)"
        classes = {"forecast": f"horizon {i.horizon}", "regress": f"{i.n_classes} value(s)",
                   "predict": f"{i.n_classes} value(s) per position"}.get(i.kind, str(i.n_classes))
        print(f"| {name} | {i.kind} | {sizes} | {i.length} | {classes} | {inputs} | {i.source} |")
    print("\n| preset (--preset) | setup |\n|---|---|")
    for name in list_presets():
        print(f"| {name} | {preset_summary(name)} |")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ssmkit.benchmarks.compare import compare, merge
    from ssmkit.benchmarks.grid import DEFAULT_MIXERS, CompareSpec, parse_eval_lengths, parse_shard
    from ssmkit.benchmarks.report import markdown, readme_block

    if args.readme_table:
        print(readme_block(args.readme_table))
        return 0
    if args.merge:
        if not args.out:
            raise ValueError("--merge needs --out DIR: the folder the merged report goes to")
        results = merge(args.merge, args.out)
    else:
        if args.task and args.tasks:
            raise ValueError("give either --task or --tasks, not both")
        tasks = ([args.task] if args.task else None) or (
            [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None)
        mixers = [m.strip() for m in args.mixers.split(",") if m.strip()] if args.mixers else list(DEFAULT_MIXERS)
        spec = CompareSpec(
            mixers=mixers, tasks=tasks, preset=args.preset, seeds=args.seeds, budget=args.budget,
            budget_rule=args.budget_rule, overrides=list(args.set), train_lengths=args.train_lengths,
            eval_lengths=parse_eval_lengths(args.eval_lengths.split(",")) if args.eval_lengths else None,
            speed_d_model=args.speed_d_model, eval_seconds=args.eval_seconds, threads=args.threads,
            shard=parse_shard(args.shard) if args.shard else (0, 1))
        if args.lengths is not None:
            spec.speed_lengths = args.lengths
        name = spec.preset_name or "-".join(tasks or [])
        out = Path(args.out or f"results/compare-{name}")
        print(f"compare {', '.join(mixers)} on {', '.join(tasks) if tasks else 'the preset task'} (preset "
              f"{spec.preset_name}); seeds {spec.seeds}; torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads; results in {out}")
        results = compare(spec, out)
        if results is None:  # a shard: its cells are written, the report comes from --merge
            return 0
    print()
    print(markdown(results))
    print()
    for kind, path in results["files"].items():
        print(f"{kind:12s} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssmkit", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("list", help="registered mixers with their modes and state size")
    s.add_argument("--d-model", type=at_least(1), default=64)
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("check", help="equivalence of every mode, step, split and mask (float64)")
    s.add_argument("names", nargs="*", help="mixers to check (default: all registered)")
    s.add_argument("--lengths", type=LENGTHS, default=list(DEFAULT_LENGTHS),
                   help=f"comma-separated sequence lengths (default: {','.join(map(str, DEFAULT_LENGTHS))}; the "
                        "chunk-length fields of each mixer are lowered so that each length crosses >= 3 chunks with "
                        "a remainder)")
    s.add_argument("--tol", type=float, default=DEFAULT_TOL, help="max relative error (default: %(default)g)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--peers", action="store_true",
                   help="instead: the Triton modes of the ops (ssmkit's triton, flash-linear-attention's fla and "
                        "fla_recurrent) in float32 against the float64 reference; NAMES are ops then (default: all; "
                        "--tol defaults to 1e-4). On a CPU they run only under TRITON_INTERPRET=1")
    s.add_argument("--device", default="cpu", help="device of --peers' inputs (cuda on a GPU)")
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("bench", help="speed, memory and state size vs length, side by side in one run")
    s.add_argument("--suite", choices=SUITES, default="lti",
                   help="lti: LTI families vs a bare FFT conv; mixers: vs attention; selective: the "
                        "selective scan vs peers; ssd: SSD vs transformers; decode: seconds per token; "
                        "generate: greedy generation of a 130m-shaped mamba / mamba2 vs transformers "
                        "(same weights, same tokens checked); compile: training step eager vs "
                        "torch.compile(inductor); packing: a packed row of --docs documents vs one document and "
                        "vs padding; packing_lm: doc_lm training steps (--repeats of them), packed vs padded; gpu: the prepared CUDA run (Triton kernels "
                        "refereed and timed vs PyTorch and peers, docs/gpu.md)")
    s.add_argument("--mixers", default="", help="comma-separated (default: depends on the suite)")
    s.add_argument("--lengths", type=LENGTHS, default=None,
                   help="comma-separated (default: 1024,4096,16384; the gpu suite: 2048,8192,32768)")
    s.add_argument("--batch", type=at_least(1), default=None, help="B (default: 1 for generate, else 2)")
    s.add_argument("--d-model", type=at_least(1), default=None, help="D (default: 768 for generate, else 512)")
    s.add_argument("--layers", type=at_least(1), default=24, help="generate: layers of the model")
    s.add_argument("--vocab", type=at_least(2), default=50280, help="generate: vocabulary size")
    s.add_argument("--prompt-length", type=at_least(1), default=64, help="generate: prompt tokens")
    s.add_argument("--new-tokens", type=at_least(1), default=64, help="generate: greedy tokens generated")
    s.add_argument("--d-state", type=at_least(1), default=64, help="N (lti suite); the selective suite uses 16")
    s.add_argument("--repeats", type=at_least(1), default=3)
    s.add_argument("--forward-only", action="store_true")
    s.add_argument("--docs", type=at_least(1), default=8, help="packing suite: documents in the packed row")
    s.add_argument("--plot", default="", metavar="PNG",
                   help="lti / mixers suites: draw seconds and the ratio to the baseline vs length to this PNG")
    s.add_argument("--memory-mb", type=float, default=None,
                   help="skip a row predicted to need more (default: half of the available memory)")
    s.add_argument("--row-seconds", type=float, default=600.0,
                   help="skip a row whose time, predicted from its last length, passes this (default: %(default)g)")
    s.add_argument("--out", default=None, metavar="PREFIX",
                   help="write the table to PREFIX.md and the rows with the machine and settings to "
                        "PREFIX.json (default: results/bench-<suite>); the gpu suite: the folder of gpu.json "
                        "and gpu.md (default: results/gpu)")
    s.add_argument("--budget-s", type=float, default=330.0,
                   help="gpu suite: start no new measurement after this many seconds (default: %(default)g)")
    s.set_defaults(fn=cmd_bench)

    def add_run_options(s: argparse.ArgumentParser) -> None:
        s.add_argument("--task", help="a registered task (ssmkit tasks lists them)")
        s.add_argument("--mixer", help="the mixer of every layer (or a comma-separated name per layer)")
        s.add_argument("--preset", help="a named published setup (ssmkit tasks lists them)")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="model field (d_model=128), training field (lr=1e-3), task.<field>=v, mixer.<field>=v; "
                            "repeatable")

    s = sub.add_parser("train", help="train a model: a task, a mixer, a preset and key=value settings "
                                     "(no arguments: the copy-memory demo)")
    add_run_options(s)
    s.add_argument("--out", help="checkpoints, run.json and metrics.jsonl go here")
    s.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    s.add_argument("--overwrite", action="store_true",
                   help="--out holds another run: move it aside to <out>.replaced-<time> (never deleted) and start anew")
    for flag, kind in (("--d-model", int), ("--layers", int), ("--delay", int), ("--steps", int),
                       ("--batch-size", int), ("--lr", float), ("--seed", int)):
        s.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)  # the demo's flags; --set does all
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("eval", help="score a checkpoint written by ssmkit train on a split")
    add_run_options(s)
    s.add_argument("--checkpoint", required=True, help="a step-XXXXXXXX folder or the folder holding them")
    s.add_argument("--split", choices=("train", "val", "test"), default="test")
    s.add_argument("--weights", choices=("best", "final"), default="best",
                   help="best-val weights when the run evaluated on val, else the final ones")
    s.add_argument("--batch-size", type=at_least(1), default=None,
                   help="examples per evaluation batch (default: the run's eval_batch_size, so the examples "
                        "and metrics are the run's)")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("tasks", help="registered tasks (kind, sizes, length, classes, source) and presets")
    s.set_defaults(fn=cmd_tasks)

    s = sub.add_parser("compare", help="the surveys' experiment: mixers x tasks x training lengths, extrapolation, "
                                       "speed / memory / state vs length; results.json, tables, plots, report.html "
                                       "(no arguments: the embedded induction-heads sweep)")
    s.add_argument("--task", help="one registered task (default: the preset's)")
    s.add_argument("--tasks", help="comma-separated tasks: a grid, each with its defaults and the --set overrides")
    s.add_argument("--mixers", default="", help="comma-separated (default: mamba,s4d,attention,lstm)")
    s.add_argument("--preset", help="a named setup (default without --task/--tasks: induction_heads_sweep)")
    s.add_argument("--train-lengths", type=LENGTHS,
                   help="train every mixer at each length (the task's length knob; default: the preset's sweep, "
                        "else the task's own length)")
    s.add_argument("--eval-lengths",
                   help="also score every trained model at these longer lengths: absolute (2048) or multiples of "
                        "the training length (x8); comma-separated")
    s.add_argument("--budget", type=at_least(1), help="optimizer steps per run (default: the preset's)")
    s.add_argument("--budget-rule", choices=("steps", "tokens"), default="steps",
                   help="steps: the same steps and batch at every length; tokens: the batch shrinks as L grows so "
                        "that tokens per step are the same at every length")
    s.add_argument("--seeds", type=int_list(0, "seeds >= 0"), default=[0], help="comma-separated seeds, each run once per mixer")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for train; repeatable")
    s.add_argument("--lengths", type=LENGTHS,
                   help="lengths of the speed / memory / state curves of the bare layers (default: 1024,4096,16384,32768)")
    s.add_argument("--speed-d-model", type=at_least(1), default=512, help="width of the bare layers timed (default: 512)")
    s.add_argument("--eval-seconds", type=float, default=120.0,
                   help="skip an evaluation length predicted to take longer than this (default: 120)")
    s.add_argument("--threads", type=at_least(1),
                   help="torch threads for every cell (default: torch's); part of the command, since a "
                        "reduction's order, so the last bits of a result, may depend on it")
    s.add_argument("--shard", help="K/N: run every N-th cell from the K-th (0 <= K < N); merge with --merge")
    s.add_argument("--merge", nargs="+", metavar="DIR", help="build the report from the folders of every shard")
    s.add_argument("--out", help="results folder (default: results/compare-<preset or tasks>)")
    s.add_argument("--readme-table", metavar="RESULTS_JSON",
                   help="print the README's comparison block from a results.json and exit")
    s.set_defaults(fn=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ssmkit.runtime import tune_allocator_from_env

    tune_allocator_from_env()  # long sequences: reuse freed blocks instead of mmap per op (ssmkit.runtime)
    try:
        return args.fn(args)
    except KeyError as e:  # str() of a KeyError quotes its message
        print(f"ssmkit {args.verb}: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError, ImportError, OSError) as e:
        print(f"ssmkit {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
