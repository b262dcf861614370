#!/usr/bin/python3
"""bench_analysis.py: analyze once / classify many, measured side by side in one run.

    PYTHONPATH=build/python tools/bench/bench_analysis.py --bundle BUNDLE --image PHOTO \
        [--ovseg build/ovseg] [--threads 2] [--repeat 3]

In-process (the Python module): segment() with a class list whose text features are cached,
against classify() of one analysis with a new list of 150 names (uncached: the text tower runs;
cached: a second call). Whole processes (--ovseg): `ovseg segment --analysis-cache` cold (the cache
empty: load, analyze, save) against a second run with another class list (only the text tower
loaded). Prints a table and the ratios; a benchmark, not a test: nothing is asserted.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def best(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def process_rows(a, ovseg):
    """Whole processes: `ovseg segment --analysis-cache` cold, then with other class lists."""
    first = ovseg.dataset_classes("ade150")
    tmp = tempfile.mkdtemp(prefix="ovseg_bench_analysis_")
    try:
        env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(tmp, "text"))
        common = [a.ovseg, "-q", "segment", "-m", a.bundle, "--analysis-cache", os.path.join(tmp, "cache")]
        if a.threads:
            common += ["-j", str(a.threads)]

        def run(classes, out):
            listing = os.path.join(tmp, out + ".txt")  # names hold commas: one per line
            with open(listing, "w", encoding="utf-8") as f:
                f.write("\n".join(classes) + "\n")
            t = time.perf_counter()
            r = subprocess.run(
                common + ["-f", listing, "-o", os.path.join(tmp, out), a.image], env=env, capture_output=True, text=True
            )
            if r.returncode != 0:
                sys.exit(f"bench_analysis: ovseg failed: {r.stderr}")
            return time.perf_counter() - t

        cold = run(first, "o1")
        second = run(ovseg.dataset_classes("ade847")[150:300], "o2")
        small = run(["sky", "tree", "red car", "road", "person"], "o3")
        print(f"  process, --analysis-cache cold (150 classes)     {cold * 1000:9.0f} ms")
        print(
            f"  process, cached, 150 new classes (text tower)    {second * 1000:9.0f} ms  = "
            f"{100 * second / cold:.1f} % of the cold run"
        )
        print(
            f"  process, cached, 5 new classes                   {small * 1000:9.0f} ms  = "
            f"{100 * small / cold:.1f} % of the cold run"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--ovseg", help="the ovseg binary, for the whole-process rows")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--process-only", action="store_true", help="only the whole-process rows")
    a = p.parse_args(argv)
    import ovseg

    ovseg.set_log_level("warn")
    if a.process_only:
        return process_rows(a, ovseg)
    t = time.perf_counter()
    model = ovseg.Model.load(a.bundle, threads=a.threads, text_cache=False)
    load_s = time.perf_counter() - t
    image = ovseg.load_image(a.image)
    first = ovseg.dataset_classes("ade150")
    a.repeat = max(1, min(a.repeat, 4))  # ade847 holds four fresh lists of 150 beyond the first 150
    fresh = [ovseg.dataset_classes("ade847")[150 + 150 * i : 300 + 150 * i] for i in range(a.repeat)]
    model.prepare_classes(first)
    seg_s = best(lambda: model.segment(image, first), a.repeat)
    t = time.perf_counter()
    analysis = model.analyze(image)
    analyze_s = time.perf_counter() - t
    uncached = []
    for i in range(a.repeat):  # each time a list the model has never seen
        names = fresh[i]
        t = time.perf_counter()
        model.classify(analysis, names)
        uncached.append(time.perf_counter() - t)
    cls_uncached_s = min(uncached)
    cls_cached_s = best(lambda: model.classify(analysis, first), a.repeat)
    print(
        f"bundle {model.info.name} ({model.info.backbone} + {model.info.clip_model}), image "
        f"{image.shape[1]}x{image.shape[0]}, {a.threads or 'all'} threads, best of {a.repeat}"
    )
    print(f"  model load                          {load_s * 1000:9.0f} ms")
    print(f"  segment (150 classes, text cached)  {seg_s * 1000:9.0f} ms")
    print(
        f"  analyze                             {analyze_s * 1000:9.0f} ms  ({analysis.bytes / 1e6:.1f} MB, "
        f"{analysis.num_regions} regions)"
    )
    print(
        f"  classify, new 150 names (uncached)  {cls_uncached_s * 1000:9.1f} ms  = "
        f"{100 * cls_uncached_s / seg_s:.2f} % of segment"
    )
    print(
        f"  classify, 150 names (text cached)   {cls_cached_s * 1000:9.1f} ms  = "
        f"{100 * cls_cached_s / seg_s:.2f} % of segment"
    )
    if a.ovseg:
        process_rows(a, ovseg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
