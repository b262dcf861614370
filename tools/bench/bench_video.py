#!/usr/bin/python3
"""bench_video.py: `ovseg segment` on videos of different lengths: frames per second and peak RSS.

    tools/bench/bench_video.py --ovseg build/ovseg [--model models/demo] [--frames 100,1000] \
        [--size 320x240] [--threads 2] [--every 1] [--no-overlay]

Makes one video per length from the demo model's example images (MJPG in AVI, OpenCV's
VideoWriter: python3-opencv), segments each with --overlay --json (the whole output path: label
maps, overlay video, report) and reports the wall time, frames per second and the process's peak
resident set size (os.wait4's ru_maxrss: that child only). Memory must not grow with the length
(frames are streamed). A benchmark, not a test: nothing is asserted.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_video(path, frames, width, height, images):
    import cv2

    base = [cv2.resize(cv2.imread(p), (width, height), interpolation=cv2.INTER_AREA) for p in images]
    vw = cv2.VideoWriter(path, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
    if not vw.isOpened():
        sys.exit("bench_video: OpenCV cannot write MJPG/AVI here")
    for k in range(frames):
        vw.write(base[k % len(base)])
    vw.release()


def run(cmd, env):
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"bench_video: {' '.join(cmd)} exited {p.returncode}:\n{err.decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024.0  # KiB -> MiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ovseg", default=os.path.join(ROOT, "build", "ovseg"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--frames", default="100,1000", help="comma-separated video lengths")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--no-overlay", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    width, height = (int(v) for v in a.size.lower().split("x"))
    images = sorted(glob.glob(os.path.join(ROOT, "models", "demo", "examples", "images", "*.png")))
    classes = os.path.join(ROOT, "models", "demo", "examples", "classes.txt")
    tmp = tempfile.mkdtemp(prefix="ovseg_bench_video_")
    env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(tmp, "text-cache"))
    rows = []
    try:
        for n in (int(v) for v in a.frames.split(",")):
            video = os.path.join(tmp, f"v{n}.avi")
            make_video(video, n, width, height, images)
            out = os.path.join(tmp, f"out{n}")
            cmd = [
                a.ovseg,
                "-q",
                "segment",
                "-m",
                a.model,
                "-f",
                classes,
                "-j",
                str(a.threads),
                "--json",
                "--every",
                str(a.every),
                "-o",
                out,
                video,
            ]
            if not a.no_overlay:
                cmd.insert(-1, "--overlay")
            wall, rss = run(cmd, env)
            with open(os.path.join(out, f"v{n}.json")) as f:
                report = json.load(f)
            rows.append(
                {
                    "frames": n,
                    "segmented": report["frames_segmented"],
                    "wall_s": round(wall, 2),
                    "frames_per_s": round(n / wall, 2),
                    "video_frames_per_s": report["timings"]["frames_per_s"],
                    "segment_ms_per_frame": round(report["timings"]["segment_ms_per_frame"], 1),
                    "peak_rss_mib": round(rss, 1),
                }
            )
            shutil.rmtree(out)
            os.remove(video)
    finally:
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    print(
        f"ovseg segment on video: {a.size}, --every {a.every}, -j {a.threads}, "
        f"{'no overlay' if a.no_overlay else '--overlay'} --json; {cpu}"
    )
    print(
        f"{'frames':>7} {'segmented':>9} {'wall s':>8} {'frames/s':>9} {'in-video f/s':>12} "
        f"{'ms/segment':>10} {'peak RSS MiB':>12}"
    )
    for r in rows:
        print(
            f"{r['frames']:>7} {r['segmented']:>9} {r['wall_s']:>8} {r['frames_per_s']:>9} "
            f"{r['video_frames_per_s']:>12} "
            f"{r['segment_ms_per_frame']:>10} {r['peak_rss_mib']:>12}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
