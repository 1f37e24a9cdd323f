"""Training efficiency of every small-input family on this CPU, and what the allocator policy buys.

``python -m zoo.bench.efficiency [--out docs/performance/efficiency.json] [--doc DOC.md]``

1. Allocator (``zoo.training.runtime``): cliquenet_k36_t12_ac training steps at batch 128 on
   1×28×28 in fresh processes under ``allocator=system`` and ``allocator=retain``, alternating,
   with the minor page faults and kernel time of each step (``getrusage``).
2. Efficiency table: per model, training images/s at batch 128 on 1×28×28 (default and
   ``train.fast``, alternating timed steps), the effective rate 6 × MACs × images/s (forward 2 FLOPs
   per MAC, backward twice the forward) and its ratio to this machine's fp32 GEMM rate measured in
   the same run, the projected Fashion-MNIST epoch (55,000 images), whether ``fast`` is exact
   (logits of the same weights), and evaluation images/s at the data config's evaluation batch.
   Models below half of the best ratio get a profile: the operators that take their time.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo.bench.complexity import count_macs
from zoo.bench.timing import TrainingStep, gemm_gflops, median_seconds, time_alternating
from zoo.io import atomic_write_json, write_marked_block
from zoo.models.fast import optimize
from zoo.training.runtime import configure_allocator

MODELS = (
    "lenet5",
    "alexnet_cifar",
    "vgg11_bn_cifar",
    "googlenet_cifar",
    "resnet20",
    "densenet_bc100_k12",
    "cliquenet_k36_t12_ac",
    "odenet_mnist",
)
INPUT = (1, 28, 28)
EPOCH_IMAGES = 55_000
EVAL_IMAGES = 15_000  # Fashion-MNIST validation (5k) + test (10k)


def training_step(name: str, batch: int, fast: bool, seed: int = 0) -> TrainingStep:
    """One model's training step at a batch size, default or fast (channels_last + rewrites)."""
    torch.manual_seed(seed)
    model = zoo.create_model(name, in_chans=INPUT[0], num_classes=10)
    if fast:
        optimize(model)
    x, y = torch.randn(batch, *INPUT), torch.randint(0, 10, (batch,))
    return TrainingStep(model, x, y, channels_last=fast, lr=0.01)


@torch.no_grad()
def fast_is_exact(name: str) -> float:
    """Largest |logit difference| between a model and its fast copy (same weights, eval, fp32)."""
    torch.manual_seed(0)
    model = zoo.create_model(name, in_chans=INPUT[0], num_classes=10).eval()
    fast = optimize(copy.deepcopy(model)).eval()
    x = torch.randn(8, *INPUT)
    return float((model(x) - fast(x.contiguous(memory_format=torch.channels_last))).abs().max())


@torch.no_grad()
def eval_images_per_s(name: str, batch: int, rounds: int = 2) -> float:
    model = zoo.create_model(name, in_chans=INPUT[0], num_classes=10).eval()
    x = torch.randn(batch, *INPUT)
    return batch / median_seconds(lambda: model(x), rounds)


def profile_top(trainer: TrainingStep, top: int = 4) -> list[dict[str, Any]]:
    """The operators with the most self CPU time over two training steps, with their share."""
    from torch.profiler import ProfilerActivity, profile

    trainer.train_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step()
        trainer.train_step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count // 2}
        for e in events[:top]
    ]


def efficiency_table(models: tuple[str, ...], batch: int, rounds: int, eval_batch: int) -> dict:
    rows = []
    gemm = []
    for name in models:
        gemm.append(gemm_gflops())
        default, fast = training_step(name, batch, False), training_step(name, batch, True)
        timed = time_alternating([default.train_step, fast.train_step], rounds)
        seconds = {"default": timed[0], "fast": timed[1]}
        macs = count_macs(default.model, INPUT)
        row = {
            "model": name,
            "params": sum(p.numel() for p in default.model.parameters()),
            "macs": macs,
            "img_s": batch / seconds["default"],
            "img_s_fast": batch / seconds["fast"],
            "fast_max_abs_diff": fast_is_exact(name),
            "eval_img_s": eval_images_per_s(name, eval_batch),
            "gemm_gflops": gemm[-1],
        }
        rows.append(row)
        print(f"{name}: {row['img_s']:.1f} img/s (fast {row['img_s_fast']:.1f})", flush=True)
        del default, fast
    rate = statistics.median(gemm)
    for row in rows:
        best = max(row["img_s"], row["img_s_fast"])
        row["effective_gflops"] = 6 * row["macs"] * best / 1e9
        row["gemm_ratio"] = row["effective_gflops"] / rate
        row["epoch_s"] = EPOCH_IMAGES / best
        row["eval_s"] = EVAL_IMAGES / row["eval_img_s"]
    best_ratio = max(r["gemm_ratio"] for r in rows)
    for row in rows:
        if row["gemm_ratio"] < best_ratio / 2:
            row["profile"] = profile_top(training_step(row["model"], batch, fast=False))
    return {"gemm_gflops": rate, "rows": rows}


# --- allocator: fresh processes, one per measurement --------------------------------------------


def _allocator_child(policy: str, batch: int, steps: int) -> None:
    configure_allocator(policy)
    trainer = training_step("cliquenet_k36_t12_ac", batch, fast=False)
    trainer.train_step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "policy": policy,
                "step_s": seconds / steps,
                "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
                "kernel_share": (after.ru_stime - before.ru_stime) / max(1e-9, seconds),
            }
        )
    )


def allocator_comparison(batch: int, steps: int, rounds: int, threads: int) -> dict[str, Any]:
    """``system`` against ``retain`` in alternating fresh processes; medians per policy."""
    results: dict[str, list[dict]] = {"system": [], "retain": []}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for _ in range(rounds):
        for policy in results:
            cmd = [sys.executable, "-m", "zoo.bench.efficiency", "--allocator-child", policy]
            cmd += ["--batch", str(batch), "--steps", str(steps), "--threads", str(threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            results[policy].append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        policy: {
            key: statistics.median(r[key] for r in runs)
            for key in ("step_s", "minor_faults_per_step", "kernel_share")
        }
        for policy, runs in results.items()
    }
    summary["speed_up"] = summary["system"]["step_s"] / summary["retain"]["step_s"]
    summary["fault_reduction"] = summary["system"]["minor_faults_per_step"] / max(
        1.0, summary["retain"]["minor_faults_per_step"]
    )
    summary["runs"] = results
    return summary


# --- report --------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    a, t = report["allocator"], report["efficiency"]
    lines = [
        f"Measured {report['date']} on {report['cpu']}, {report['threads']} threads, fp32; "
        f"this run's fp32 GEMM rate: **{t['gemm_gflops']:.0f} GFLOP/s** "
        f"(`{report['command']}`).",
        "",
        f"**Allocator** (cliquenet_k36_t12_ac, batch {report['batch']}, 1×28×28, "
        f"{a['rounds']} alternating fresh processes per policy, medians):",
        "",
        "| allocator | s / step | images/s | minor page faults / step | kernel time |",
        "|---|---:|---:|---:|---:|",
    ]
    for policy in ("system", "retain"):
        p = a[policy]
        lines.append(
            f"| `{policy}` | {p['step_s']:.2f} | {report['batch'] / p['step_s']:.1f} | "
            f"{p['minor_faults_per_step']:,.0f} | {100 * p['kernel_share']:.0f} % |"
        )
    lines += [
        "",
        f"`retain` is **{a['speed_up']:.2f}×** faster per step with "
        f"**{a['fault_reduction']:.0f}×** fewer minor page faults.",
        "",
        f"**Efficiency** (training at batch {report['batch']} on 1×28×28, default and "
        "`train.fast`, alternating timed steps; effective rate = 6 × MACs × images/s of the "
        "faster mode; "
        f"epoch = {EPOCH_IMAGES:,} images; evaluation = {EVAL_IMAGES:,} images at batch "
        f"{report['eval_batch']}):",
        "",
        "| model | params | MACs | img/s | img/s fast | fast exact | GFLOP/s | of GEMM | "
        "epoch | val + test |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in t["rows"]:
        exact = "yes" if r["fast_max_abs_diff"] < 1e-4 else f"no ({r['fast_max_abs_diff']:.1e})"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['macs'] / 1e6:.1f} M | {_rate(r['img_s'])} | "
            f"{_rate(r['img_s_fast'])} | {exact} | {r['effective_gflops']:.1f} | "
            f"{100 * r['gemm_ratio']:.0f} % | {_duration(r['epoch_s'])} | "
            f"{_duration(r['eval_s'])} |"
        )
    profiled = [r for r in t["rows"] if "profile" in r]
    if profiled:
        lines += ["", "Profiles of the models below half of the best ratio (self CPU time):", ""]
        for r in profiled:
            ops = ", ".join(f"`{p['op']}` {100 * p['share']:.0f} %" for p in r["profile"])
            lines.append(f"- {r['model']}: {ops}")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    ):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="allocator: timed steps per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/performance/efficiency.json"))
    parser.add_argument("--doc", type=Path, default=None, help="rewrite this doc's table")
    parser.add_argument("--allocator-child", choices=("system", "retain"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.allocator_child:
        _allocator_child(args.allocator_child, args.batch, args.steps)
        return
    allocator = allocator_comparison(args.batch, args.steps, args.rounds, args.threads)
    allocator["rounds"] = args.rounds
    configure_allocator("retain")
    table = efficiency_table(tuple(args.models), args.batch, args.rounds, args.eval_batch)
    report = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "eval_batch": args.eval_batch,
        "command": "python -m zoo.bench.efficiency " + " ".join(argv or sys.argv[1:]),
        "allocator": allocator,
        "efficiency": table,
    }
    atomic_write_json(args.out, report)
    text = markdown(report)
    print(text)
    if args.doc:
        write_marked_block(args.doc, "efficiency", text, append=True)


if __name__ == "__main__":
    main()
