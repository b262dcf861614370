#!/usr/bin/python3
"""Overhead of the Python call `model.segment(array, classes)` against the C++ call
`model.segment(image.view(), classes)` on the same bundle, image and classes (a benchmark, not a test).

Both sides time each call with a monotonic clock around the call, after warm-up calls, with the text
features prepared and the same thread count; the C++ side is `ovseg_segment_loop` (built with the
benchmarks, public API only). Each call also reports the library's own clock of the work inside
(Result.timings total), so the overhead of each side is measured per call as wall − inner, which
machine load mostly cancels out of; the plain ratio of the median wall times is printed as well.

    PYTHONPATH=build/python python/benchmark/bench_overhead.py --bundle build/test-bundles/tiny_swin_vit \\
        --image ../shared/ovseg/fixtures/tiny_swin_vit/image.png \\
        --classes-file ../shared/ovseg/fixtures/tiny_swin_vit/classes.txt --loop build/python/ovseg_segment_loop
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import ovseg


def python_side(args, classes):
    model = ovseg.Model.load(args.bundle, threads=args.threads, text_cache=False)
    model.prepare_classes(classes)
    image = ovseg.load_image(args.image)
    wall, inner = [], []
    for i in range(args.warmup + args.repeat):
        t0 = time.perf_counter()
        r = model.segment(image, classes)
        ms = (time.perf_counter() - t0) * 1000.0
        if i >= args.warmup:
            wall.append(ms)
            inner.append(r.timings["total"])
    return wall, inner


def cpp_side(args):
    p = subprocess.run(
        [args.loop, args.bundle, args.image, args.classes_file, str(args.repeat), str(args.warmup), str(args.threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(p.stdout)
    return out["wall_ms"], out["inner_ms"]


def summary(wall, inner):
    over = [w - i for w, i in zip(wall, inner)]
    return {
        "wall_ms": statistics.median(wall),
        "inner_ms": statistics.median(inner),
        "overhead_ms": statistics.median(over),
        "overhead_max_ms": max(over),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--classes-file", required=True)
    p.add_argument("--loop", required=True, help="the built ovseg_segment_loop")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="C++ and Python runs alternate this many times")
    args = p.parse_args()
    ovseg.set_log_level("warn")
    with open(args.classes_file, encoding="utf-8") as f:
        classes = [line.rstrip("\n") for line in f if line.rstrip("\n")]
    cw, ci, pw, pi = [], [], [], []
    per_round = []
    for _ in range(args.rounds):
        w, i = cpp_side(args)
        cw += w
        ci += i
        w2, i2 = python_side(args, classes)
        pw += w2
        pi += i2
        per_round.append({"cpp_wall_ms": statistics.median(w), "python_wall_ms": statistics.median(w2)})
    c, py = summary(cw, ci), summary(pw, pi)
    extra = py["overhead_ms"] - c["overhead_ms"]
    report = {
        "cpp": c,
        "python": py,
        "calls_per_side": len(cw),
        "threads": args.threads,
        "python_extra_ms_per_call": extra,
        "python_extra_percent_of_cpp_call": 100.0 * extra / c["wall_ms"],
        "median_wall_ratio_python_over_cpp": py["wall_ms"] / c["wall_ms"],
        "rounds": per_round,
    }
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
