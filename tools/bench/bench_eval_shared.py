#!/usr/bin/python3
"""bench_eval_shared.py: `ovseg eval --dataset ade150,ade847` against the two runs, side by side.

    tools/bench/bench_eval_shared.py --ovseg build/ovseg --model BUNDLE [--images N] [--threads 2]

Builds A-150 and A-847 layouts whose images are the same files (as the real datasets' are the
same 2000 ADE20K images; scenes rendered from the demo model's examples, resized to 640 px wide),
random labels, then times `eval --dataset ade150`, `eval --dataset ade847` and the two together,
and checks that the metrics agree. A benchmark, not a test.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(ROOT, "models", "demo", "examples", "images")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ovseg", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="ovseg_bench_eval_")
    try:
        root = os.path.join(tmp, "datasets")
        sources = sorted(os.listdir(EXAMPLES))
        rng = np.random.default_rng(0)
        dirs = {
            "ade150": (
                "ADEChallengeData2016/images/validation",
                "ADEChallengeData2016/annotations_detectron2/validation",
                ".png",
                150,
                8,
            ),
            "ade847": (
                "ADE20K_2021_17_01/images_detectron2/validation",
                "ADE20K_2021_17_01/annotations_detectron2/validation",
                ".tif",
                847,
                16,
            ),
        }
        for i in range(a.images):
            img = Image.open(os.path.join(EXAMPLES, sources[i % len(sources)])).convert("RGB")
            img = img.resize((640, 640 * img.height // img.width)).rotate(7 * i)
            stem = f"ADE_val_{i + 1:08d}"
            for name, (idir, ldir, ext, k, depth) in dirs.items():
                os.makedirs(os.path.join(root, idir), exist_ok=True)
                os.makedirs(os.path.join(root, ldir), exist_ok=True)
                img.save(os.path.join(root, idir, stem + ".jpg"), quality=92)
                gt = rng.integers(0, k, size=(img.height, img.width))
                arr = Image.fromarray(gt.astype(np.uint8 if depth == 8 else np.uint16))
                arr.save(os.path.join(root, ldir, stem + ext))
        env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(tmp, "text"))
        base = [a.ovseg, "-q", "eval", "-m", a.model, "--root", root] + (["-j", str(a.threads)] if a.threads else [])

        def run(datasets, out):
            t = time.perf_counter()
            r = subprocess.run(
                base + ["--dataset", datasets, "-o", os.path.join(tmp, out)], env=env, capture_output=True, text=True
            )
            if r.returncode != 0:
                sys.exit(f"bench_eval_shared: {r.stderr}")
            return time.perf_counter() - t

        run("ade150", "warm")  # the text features of both lists on disk: the runs below compare the images' work
        run("ade847", "warm847")
        t150 = run("ade150", "a150")
        t847 = run("ade847", "a847")
        both = run("ade150,ade847", "both")
        same = True
        for name, alone in (("ade150", "a150"), ("ade847", "a847")):
            with open(os.path.join(tmp, alone, "metrics.json")) as f1, open(
                os.path.join(tmp, "both", name, "metrics.json")
            ) as f2:
                m1, m2 = json.load(f1), json.load(f2)
            same = same and m1.get("metrics", m1).get("mIoU") == m2.get("metrics", m2).get("mIoU")
        print(f"{a.images} images, model {a.model}, {a.threads or 'all'} threads")
        print(f"  eval --dataset ade150          {t150:8.1f} s")
        print(f"  eval --dataset ade847          {t847:8.1f} s")
        print(
            f"  eval --dataset ade150,ade847   {both:8.1f} s  = {both / (t150 + t847):.2f} x the two runs; "
            f"metrics {'identical' if same else 'DIFFER'}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
