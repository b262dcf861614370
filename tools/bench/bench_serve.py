#!/usr/bin/env python3
"""Load benchmark of `ovseg serve` (a benchmark, not a test): starts the real server on 127.0.0.1,
then measures, side by side in one run:

  1. the cold request (first image, first class list: text features and analysis),
  2. a warm request with a new image (analysis + classification),
  3. re-classification of a cached image with a new class list,
  4. throughput and p50/p99 latency of N requests from C concurrent clients (Debian's `hey`) on a
     cached image, and what a full queue answers (--queue 1 under the same load: 200s and 503s).

    tools/bench/bench_serve.py --bin build/ovseg [--model models/demo] [--image IMG] [-n 200] [-c 8]

Prints a Markdown table; the README's "Serve" section and the issue notes quote it.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def multipart(fields):
    boundary = "bench" + uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            out.append(
                (
                    '--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name, value[0])
                ).encode()
            )
            out.append(value[1])
        else:
            out.append(
                ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s' % (boundary, name, value)).encode()
            )
        out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def post(url, fields):
    body, ctype = multipart(fields)
    req = urllib.request.Request(url + "/v1/segment", data=body, headers={"Content-Type": ctype})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=3600) as r:
        doc = json.loads(r.read())
    return time.perf_counter() - t0, doc


class Server:
    def __init__(self, binary, model, *args, env=None):
        self.proc = subprocess.Popen(
            [binary, "-q", "serve", "-m", model, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        m = re.search(r":(\d+)/", self.proc.stdout.readline())
        self.url = "http://127.0.0.1:%s" % m.group(1)
        t0 = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            time.sleep(0.05)
        self.load_s = time.perf_counter() - t0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def hey(url, fields, n, c):
    """n requests from c clients; per-request times from hey's CSV: (rps, p50, p99, statuses, errors)."""
    body, ctype = multipart(fields)
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(body)
    try:
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                "hey",
                "-n",
                str(n),
                "-c",
                str(c),
                "-m",
                "POST",
                "-T",
                ctype,
                "-D",
                f.name,
                "-t",
                "3600",
                "-o",
                "csv",
                url + "/v1/segment",
            ],
            capture_output=True,
            text=True,
            timeout=7200,
        )
        wall = time.perf_counter() - t0
    finally:
        os.unlink(f.name)
    times, codes = [], {}
    for line in p.stdout.splitlines()[1:]:
        cols = line.split(",")
        if len(cols) < 7:
            continue
        times.append(float(cols[0]))
        codes[int(cols[6])] = codes.get(int(cols[6]), 0) + 1
    times.sort()

    def pct(q):
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    failed = (n // c) * c - len(times)  # hey sends n // c per client
    return len(times) / wall, pct(0.5), pct(0.99), codes, ("%d failed" % failed) if failed else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "ovseg"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument(
        "--image", default=os.path.join(ROOT, "models", "demo", "examples", "images", "heldout_2026_00001.png")
    )
    ap.add_argument(
        "--image2", default=os.path.join(ROOT, "models", "demo", "examples", "images", "seen_2026_00001.png")
    )
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-c", type=int, default=8)
    ap.add_argument("--threads", default="0")
    args = ap.parse_args()
    if not shutil.which("hey"):
        sys.exit("bench_serve: needs Debian's hey (apt-get install hey)")
    tmp = tempfile.mkdtemp(prefix="ovseg_bench_serve_")
    env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(tmp, "text-cache"))
    with open(args.image, "rb") as f:
        img1 = f.read()
    with open(args.image2, "rb") as f:
        img2 = f.read()
    a = "sky, grass, red star, dotted blue star, brick wall"
    b = "sky, red circle, striped green square, wooden floor, water"
    rows = []
    s = Server(args.bin, args.model, "-j", args.threads, "--queue", str(args.c), env=env)
    try:
        rows.append(("server start to /health 200", s.load_s, ""))
        t, d = post(s.url, {"image": ("1.png", img1), "classes": a})
        rows.append(("cold request (first image, first class list)", t, "cached=%s" % d["cached"]))
        t, d = post(s.url, {"image": ("2.png", img2), "classes": a})
        rows.append(("warm request, new image", t, "cached=%s" % d["cached"]))
        t, d = post(s.url, {"image": ("2.png", img2), "classes": b})
        rows.append(("re-classification of a cached image, new class list", t, "cached=%s" % d["cached"]))
        t, d = post(s.url, {"image_sha256": d["image_sha256"], "classes": a})
        rows.append(("the same without the upload (image_sha256)", t, "cached=%s" % d["cached"]))
        rps, p50, p99, codes, errors = hey(s.url, {"image": ("2.png", img2), "classes": a}, args.n, args.c)
        load = (rps, p50, p99, codes, errors)
    finally:
        s.stop()
    s = Server(args.bin, args.model, "-j", args.threads, "--queue", "1", env=env)
    try:
        # Every request a new analysis: another threshold each time is not possible with one body,
        # so a full queue is shown with the cached image under twice the clients.
        full = hey(s.url, {"image": ("1.png", img1), "classes": a, "mask_threshold": "0.41"}, args.n, args.c * 2)
    finally:
        s.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    cpu = subprocess.run(
        ["bash", "-c", "lscpu | sed -n 's/^Model name:\\s*//p' | head -1"], capture_output=True, text=True
    ).stdout.strip()
    print(
        "ovseg serve, model %s, %s, %d CPUs\n" % (os.path.basename(os.path.normpath(args.model)), cpu, os.cpu_count())
    )
    print("| | seconds | |\n|---|---:|---|")
    for name, t, note in rows:
        print("| %s | %.3f | %s |" % (name, t, note))
    rps, p50, p99, codes, errors = load
    print(
        "\nhey -n %d -c %d (cached image, one class list): %.1f requests/s, p50 %.3f s, p99 %.3f s, statuses %s%s"
        % (args.n, args.c, rps, p50, p99, codes, (", errors: " + errors) if errors else ", no failed requests")
    )
    rps, p50, p99, codes, errors = full
    print(
        "hey -n %d -c %d with --queue 1: %.1f requests/s, p50 %.3f s, p99 %.3f s, statuses %s%s"
        % (args.n, args.c * 2, rps, p50, p99, codes, (", errors: " + errors) if errors else "")
    )


if __name__ == "__main__":
    main()
