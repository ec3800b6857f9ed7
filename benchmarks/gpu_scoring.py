"""The worker's scorer on a GPU: where the time goes, by batch size (issue #14).

Loads an artifact with `ArtifactScorer` (CUDA: bf16; CPU: fp32), cleans and sorts ~30-word
items as the scorer does, cuts them into chunks of each batch size and times, in items/s:

- tokenise: the scorer's tokenisation of every chunk (`encode`, as `score_fitting` calls
  it), on the calling thread;
- forward: the model alone on those chunks, already tokenised, padded and on the device;
- sequential: tokenise -> host-to-device -> forward -> device-to-host, one chunk after the
  other (the scorer's own `encode` and `run`); one extra instrumented pass gives each
  stage's share of that time;
- overlapped: chunk i+1 tokenised on a tokenizer thread (fast tokenizers release the GIL)
  while chunk i runs; on CUDA from pinned memory with non-blocking copies both ways, and
  chunk i's results read only once chunk i+1 is queued;
- score_fitting: the worker's whole call (cleaning, sorting, its own tokenizer thread,
  `ItemScores` per item).

With `--compile`, the model is also run through `torch.compile` (mode "reduce-overhead"
uses CUDA graphs) on chunks padded to fixed token lengths (`--buckets`) so that compiled
graphs are reused: compiled forward and overlapped items/s beside the eager ones. A failing
compile is reported in the table's note, not raised. Texts only: no company mentions.

    .venv/bin/python benchmarks/gpu_scoring.py --device cpu --items 64 --batch-sizes 8,16
    python3 benchmarks/gpu_scoring.py --device cuda --compile     # see benchmarks/gpu_run.sh
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from classifier_throughput import encoder_gflops_per_item, matmul_gflops, thirty_word_items, timed
from rich.console import Console
from rich.table import Table

from finsentry.models.artifact import resolve_artifact
from finsentry.models.runtime import ArtifactScorer, _TorchGroup, softmax
from finsentry.models.text import preprocessor
from finsentry.settings import Settings

Batch = dict[str, torch.Tensor]
Forward = Callable[[Batch], Sequence[torch.Tensor]]
STAGES = ("tokenise", "h2d", "forward", "d2h")


@dataclass
class Row:
    batch: int
    tokenise: float
    forward: float
    sequential: float
    overlapped: float
    score_fitting: float
    shares: dict[str, float]
    bound: str
    compiled_forward: float | None = None
    compiled_overlapped: float | None = None
    notes: list[str] = field(default_factory=list)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoded_chunk(group: _TorchGroup, texts: list[str]) -> Batch:
    """The scorer's tokenisation of one chunk (as `score_fitting`: cut texts dropped)."""
    encoded, _keep = group.encode(texts, [], drop_truncated=True)
    assert encoded is not None, "every text of the chunk is longer than the model window"
    return encoded[0]


def to_buckets(batch: Batch, buckets: Sequence[int], rows: int, pad_id: int) -> Batch:
    """Padded to the smallest bucket length that holds it and to `rows` rows, so that a
    compiled graph of that shape is reused. Padding rows attend to their first token only."""
    width = batch["input_ids"].shape[1]
    target = next((b for b in sorted(buckets) if b >= width), width)
    extra_rows = rows - batch["input_ids"].shape[0]
    out = {}
    for name, value in batch.items():
        fill = pad_id if name == "input_ids" else 0
        out[name] = torch.nn.functional.pad(value, (0, target - width, 0, extra_rows), value=fill)
    if extra_rows > 0:
        out["attention_mask"][-extra_rows:, 0] = 1
    return out


def eager_forward(group: _TorchGroup) -> Forward:
    return lambda batch: tuple(group.module.task_logits(batch).values())


def compiled_forward(group: _TorchGroup, backend: str, mode: str) -> Forward:
    """`torch.compile` of the scorer's module (compiled lazily, on the first call of each
    shape; dynamo makes the shapes dynamic after the first recompile). `mode` is inductor's."""
    if backend == "inductor":
        module = torch.compile(group.module, mode=mode)
    else:
        module = torch.compile(group.module, backend=backend)

    def forward(batch: Batch) -> Sequence[torch.Tensor]:
        torch.compiler.cudagraph_mark_step_begin()  # a new step: earlier outputs are done with
        return module(**batch)

    return forward


def run_forward(forward: Forward, batches: list[Batch], device: torch.device) -> None:
    """The model alone over device-resident batches."""
    with torch.inference_mode():
        for batch in batches:
            forward(batch)
    sync(device)


def staged_pass(
    group: _TorchGroup, chunks: list[list[str]], device: torch.device
) -> dict[str, float]:
    """Seconds in each stage of one sequential pass (synchronised between stages)."""
    spent = dict.fromkeys(STAGES, 0.0)
    for chunk in chunks:
        t0 = time.perf_counter()
        inputs = encoded_chunk(group, chunk)
        t1 = time.perf_counter()
        batch = {k: v.to(device) for k, v in inputs.items()}
        sync(device)
        t2 = time.perf_counter()
        with torch.inference_mode():
            logits = group.module.task_logits(batch)
        sync(device)
        t3 = time.perf_counter()
        {t: softmax(v.float().cpu().numpy()) for t, v in logits.items()}
        t4 = time.perf_counter()
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[stage] += seconds
    return spent


def overlapped_pass(
    prepare: Callable[[list[str]], Batch],
    forward: Forward,
    chunks: list[list[str]],
    device: torch.device,
) -> list[np.ndarray]:
    """Chunk i+1 prepared on a tokenizer thread while chunk i runs; chunk i's results are
    read back (softmax on the host) only once chunk i+1 has been queued on the device."""
    on_cuda = device.type == "cuda"

    def host_inputs(chunk: list[str]) -> Batch:
        batch = prepare(chunk)
        return {k: v.pin_memory() for k, v in batch.items()} if on_cuda else batch

    def finish(pending: tuple[Sequence[torch.Tensor], Any]) -> list[np.ndarray]:
        logits, done = pending
        if done is not None:
            done.synchronize()
        return [softmax(v.numpy()) for v in logits]

    results: list[np.ndarray] = []
    previous = None
    with ThreadPoolExecutor(1, thread_name_prefix="bench-tokenize") as pool:
        upcoming = pool.submit(host_inputs, chunks[0])
        for i in range(len(chunks)):
            inputs = upcoming.result()
            if i + 1 < len(chunks):
                upcoming = pool.submit(host_inputs, chunks[i + 1])
            with torch.inference_mode():
                batch = {k: v.to(device, non_blocking=on_cuda) for k, v in inputs.items()}
                logits = [v.float().to("cpu", non_blocking=on_cuda) for v in forward(batch)]
            done = torch.cuda.Event() if on_cuda else None
            if done is not None:
                done.record()
            if previous is not None:
                results.extend(finish(previous))
            previous = (logits, done)
    if previous is not None:
        results.extend(finish(previous))
    return results


def measure(
    scorer: ArtifactScorer,
    group: _TorchGroup,
    texts: list[str],
    cleaned: list[str],
    size: int,
    repeat: int,
) -> Row:
    device = group.device
    chunks = [cleaned[i : i + size] for i in range(0, len(cleaned), size)]
    n = len(cleaned)
    encoded = [encoded_chunk(group, c) for c in chunks]
    on_device = [{k: v.to(device) for k, v in b.items()} for b in encoded]
    forward = eager_forward(group)

    tokenise = timed(lambda: [encoded_chunk(group, c) for c in chunks], n, repeat)
    forward_rate = timed(lambda: run_forward(forward, on_device, device), n, repeat)
    sequential = timed(
        lambda: [group.run((encoded_chunk(group, c), None)) for c in chunks], n, repeat
    )
    spent = staged_pass(group, chunks, device)
    overlapped = timed(
        lambda: overlapped_pass(lambda c: encoded_chunk(group, c), forward, chunks, device),
        n,
        repeat,
    )
    scorer.batch_size = size
    whole = timed(lambda: scorer.score_fitting(texts), n, repeat)

    total = sum(spent.values())
    # The overlapped pass can go no faster than its slower side: the tokenizer thread or
    # the model (forward alone; the copies are small beside it).
    slowest, rate = ("tokenise", tokenise) if tokenise < forward_rate else ("forward", forward_rate)
    return Row(
        batch=size,
        tokenise=tokenise,
        forward=forward_rate,
        sequential=sequential,
        overlapped=overlapped,
        score_fitting=whole,
        shares={stage: seconds / total for stage, seconds in spent.items()},
        bound=f"{slowest} ({overlapped / rate:.0%})",
    )


def add_compiled(
    row: Row,
    group: _TorchGroup,
    compiled: Forward,
    cleaned: list[str],
    buckets: Sequence[int],
    repeat: int,
) -> None:
    """Compiled forward and overlapped items/s on bucket-padded chunks; errors to the note."""
    device, size, n = group.device, row.batch, len(cleaned)
    pad_id = group.tokenizer.pad_token_id or 0
    chunks = [cleaned[i : i + size] for i in range(0, n, size)]

    def prepare(chunk: list[str]) -> Batch:
        return to_buckets(encoded_chunk(group, chunk), buckets, size, pad_id)

    try:
        on_device = [{k: v.to(device) for k, v in prepare(c).items()} for c in chunks]
        started = time.perf_counter()
        run_forward(compiled, on_device, device)  # compiles (or records graphs) per shape
        row.notes.append(f"first pass (compiling) {time.perf_counter() - started:.1f}s")
        row.compiled_forward = timed(lambda: run_forward(compiled, on_device, device), n, repeat)
        row.compiled_overlapped = timed(
            lambda: overlapped_pass(prepare, compiled, chunks, device), n, repeat
        )
    except Exception as error:  # a failing compile is a result, not a crash
        row.notes.append(failure(error))


def failure(error: Exception) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"compile failed: {type(error).__name__}: {first_line}"[:160]


def progress(row: Row) -> str:
    line = f"batch {row.batch}: tokenise {row.tokenise:,.0f}, forward {row.forward:,.0f}, "
    line += f"overlapped {row.overlapped:,.0f} items/s"
    if row.compiled_forward is not None and row.compiled_overlapped is not None:
        line += f"; compiled forward {row.compiled_forward:,.0f}, "
        line += f"overlapped {row.compiled_overlapped:,.0f}"
    return line + "".join(f"; {note}" for note in row.notes)


def print_table(console: Console, rows: list[Row], title: str, compiled: bool) -> None:
    caption = (
        "tok/h2d/fwd/d2h %: shares of one sequential pass, synchronised between stages. "
        "bound: the slower of tokenise and forward; (reached): overlapped/s as a share of it"
    )
    table = Table(title=title, caption=caption)
    columns = ["batch", "tokenise/s", "forward/s", "sequential/s", "overlapped/s"]
    columns += ["score_fitting/s", "tok %", "h2d %", "fwd %", "d2h %", "bound (reached)"]
    if compiled:
        columns += ["compiled fwd/s", "compiled ovl/s", "note"]
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("bound (reached)", "note") else "right"
        )
    for row in rows:
        cells = [str(row.batch)]
        cells += [f"{rate:,.0f}" for rate in (row.tokenise, row.forward, row.sequential)]
        cells += [f"{rate:,.0f}" for rate in (row.overlapped, row.score_fitting)]
        cells += [f"{row.shares[stage]:.0%}" for stage in STAGES] + [row.bound]
        if compiled:
            for rate in (row.compiled_forward, row.compiled_overlapped):
                cells.append("-" if rate is None else f"{rate:,.0f}")
            cells.append("; ".join(row.notes))
        table.add_row(*cells)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: newest)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--items", type=int, default=16384, help="items per pass")
    parser.add_argument("--batch-sizes", default="32,64,128,256,512")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best) after a warm-up")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="eager or aot_eager: trace without inductor"
    )
    parser.add_argument("--buckets", default="32,64,128", help="token lengths for --compile")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    buckets = [int(b) for b in args.buckets.split(",")]

    settings = Settings()
    model = args.model or resolve_artifact(settings.models_dir, settings.model_path)
    scorer = ArtifactScorer(model, device=args.device)
    groups = [g for g in scorer.groups if isinstance(g, _TorchGroup)]
    if len(groups) != 1 or len(scorer.groups) != 1:
        raise SystemExit("--model must be a PyTorch artifact with one tokenizer (shared encoder)")
    group = groups[0]
    device, dtype = group.device, next(group.module.parameters()).dtype

    unique = thirty_word_items(settings.data_dir / "tfns_sentiment" / "train.csv", args.items)
    texts = list(islice(cycle(unique), args.items))
    clean = preprocessor(scorer.manifest.preprocess)
    started = time.perf_counter()
    cleaned = [clean(t) for t in texts]
    cleaning = len(texts) / (time.perf_counter() - started)
    cleaned.sort(key=len)  # as the scorer orders a call's texts, so padding stays small

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    console = Console(width=200)
    console.print(
        f"torch {torch.__version__}, device {device} ({device_name}), {str(dtype)[6:]}, "
        f"artifact {scorer.version} ({model.name}); {len(texts)} items ({len(unique)} unique), "
        f"cleaning {cleaning:,.0f} items/s on the calling thread"
    )

    compiled: Forward | None = None
    compile_error = ""
    if args.compile:
        try:
            compiled = compiled_forward(group, args.compile_backend, args.compile_mode)
        except Exception as error:  # reported in the table's note
            compile_error = failure(error)
    rows = []
    for size in sizes:
        row = measure(scorer, group, texts, cleaned, size, args.repeat)
        if compiled is not None:
            add_compiled(row, group, compiled, cleaned, buckets, args.repeat)
        elif compile_error:
            row.notes.append(compile_error)
        rows.append(row)
        console.print(progress(row))  # as it goes, in case a later batch size is cut short

    how = args.compile_mode if args.compile_backend == "inductor" else args.compile_backend
    mode = f", compiled {how}, buckets {args.buckets}" if args.compile else ""
    title = f"worker scorer, ~30-word items, {device} {str(dtype)[6:]}{mode} (items/s)"
    print_table(console, rows, title, args.compile)
    peak = matmul_gflops(str(device))
    gflops = encoder_gflops_per_item(scorer, cleaned[:: max(1, len(cleaned) // 128)])
    best = max(max(r.overlapped, r.compiled_overlapped or 0.0) for r in rows)
    console.print(
        f"compute floor: {gflops:.2f} GFLOP per item, device matmul {peak:,.0f} GFLOP/s -> at "
        f"most {peak / gflops:,.0f} items/s; best overlapped {best:,.0f} items/s "
        f"(target on one H200: >= 20,000)"
    )
    if args.json:
        header = {"torch": torch.__version__, "device": device_name, "dtype": str(dtype)[6:]}
        header |= {"artifact": scorer.version, "items": len(texts), "compile": args.compile}
        header |= {"compile_backend": args.compile_backend, "compile_mode": args.compile_mode}
        header |= {"buckets": buckets}
        payload = {**header, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
