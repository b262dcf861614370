#!/usr/bin/python3
"""Smoke tests of the benchmarks on the fixture bundle (ctest bench.quick / bench.compare).

  bench_smoke.py bench   --ovseg BIN --bundle DIR --shared SHARED
  bench_smoke.py compare --ovseg BIN --bundle DIR --shared SHARED --compare SCRIPT

`bench` runs `ovseg bench --quick --json` and checks that it exits 0 and prints one JSON object
with every stage; `compare` runs tools/ovseg-bench-compare once (--repeat 1 --warmup 0) and
checks its JSON report. Timings are only checked to be finite numbers, never against limits.
Exit 77 (ctest "skipped") when the fixture or its bundle is absent.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

FIXTURE = "tiny_swin_vit"
STAGES = (
    "decode",
    "preprocess",
    "proposals",
    "text_cold",
    "text_warm",
    "text_in_segment",
    "regions",
    "clip_regions",
    "post",
    "total",
)


def fail(msg: str) -> int:
    print(f"bench_smoke: FAILED: {msg}")
    return 1


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_bench_json(out: dict, image_size) -> str:
    """An empty string when `out` is a complete `ovseg bench --json` report."""
    stages = out.get("stages_ms")
    if not isinstance(stages, dict):
        return "no stages_ms object"
    for s in STAGES:
        if not number(stages.get(s)) or stages[s] < 0:
            return f"stage {s!r} missing or not a non-negative number: {stages.get(s)!r}"
    if stages["total"] <= 0:
        return "total time is not positive"
    for key in ("images_per_s", "regions_per_s", "clip_gflop", "clip_gflop_per_s", "peak_rss_mib", "load_ms"):
        if not number(out.get(key)):
            return f"{key} missing or not a number: {out.get(key)!r}"
    if out["peak_rss_mib"] <= 0:
        return "peak RSS is not positive"
    if not isinstance(out.get("valid_regions"), int) or out["valid_regions"] < 0:
        return f"valid_regions: {out.get('valid_regions')!r}"
    if (out["valid_regions"] > 0) != (out["clip_gflop"] > 0):
        return "CLIP GFLOP count disagrees with the valid region count"
    if list(out.get("image_size", [])) != list(image_size):
        return f"image_size {out.get('image_size')!r}, expected {list(image_size)!r}"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("bench", "compare"))
    ap.add_argument("--ovseg", required=True)
    ap.add_argument("--bundle", required=True, help="the directory of the exported fixture bundles")
    ap.add_argument("--shared", required=True)
    ap.add_argument("--compare", help="tools/ovseg-bench-compare")
    args = ap.parse_args()
    fixture = os.path.join(args.shared, "fixtures", FIXTURE)
    bundle = os.path.join(args.bundle, FIXTURE)
    image = os.path.join(fixture, "image.png")
    classes = os.path.join(fixture, "classes.txt")
    for p in (image, classes, os.path.join(bundle, "manifest.json")):
        if not os.path.exists(p):
            print(f"bench_smoke: skipped: {p} not found")
            return 77
    from PIL import Image

    with Image.open(image) as im:
        size = (im.width, im.height)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")

    if args.what == "bench":
        cmd = [
            args.ovseg,
            "bench",
            "--quick",
            "--model",
            bundle,
            "--image",
            image,
            "--classes-file",
            classes,
            "--threads",
            "2",
            "--json",
            "-q",
        ]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if res.returncode != 0:
            return fail(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stderr}")
        try:
            out = json.loads(res.stdout)
        except json.JSONDecodeError as e:
            return fail(f"stdout is not JSON ({e}):\n{res.stdout[:2000]}")
        err = check_bench_json(out, size)
        if err:
            return fail(err)
        if out.get("repeat") != 1:
            return fail(f"--quick ran {out.get('repeat')!r} timed runs, expected 1")
        print("bench_smoke: ovseg bench --quick: " + json.dumps(out["stages_ms"]))
        return 0

    if not args.compare:
        return fail("--compare is required for 'compare'")
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        cmd = [
            sys.executable,
            args.compare,
            "--model",
            bundle,
            "--image",
            image,
            "--classes",
            classes,
            "--threads",
            "2",
            "--repeat",
            "1",
            "--warmup",
            "0",
            "--ovseg",
            args.ovseg,
            "--json",
            report_path,
        ]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if res.returncode != 0:
            return fail(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        with open(report_path, "r", encoding="utf-8") as f:
            report = json.load(f)
    err = check_bench_json(report.get("ovseg", {}), size)
    if err:
        return fail("ovseg side: " + err)
    peaks = report.get("matmul_peak_gflops", {})
    if not (number(peaks.get("fp32")) and peaks["fp32"] > 0 and number(peaks.get("bf16"))):
        return fail(f"matmul peaks: {peaks!r}")
    rows = ("decode_resize", "proposals", "text_cold", "regions", "clip", "post", "per_image_warm_text")
    for side in ("reference_ms", "ovseg_ms"):
        for r in rows:
            v = report.get(side, {}).get(r)
            if not number(v) or v < 0:
                return fail(f"{side}[{r!r}]: {v!r}")
    # Both sides ran the same bundle on the same image in float32: the same valid regions.
    if report.get("reference_valid_regions") != report["ovseg"]["valid_regions"]:
        return fail(
            f"valid regions: reference {report.get('reference_valid_regions')}, "
            f"ovseg {report['ovseg']['valid_regions']}"
        )
    if not (number(report.get("reference_peak_rss_mib")) and report["reference_peak_rss_mib"] > 0):
        return fail("reference peak RSS missing")
    print("bench_smoke: ovseg-bench-compare:\n" + res.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
