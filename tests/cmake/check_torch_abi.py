#!/usr/bin/python3
"""Every compiled target follows torch's _GLIBCXX_USE_CXX11_ABI, also when torch says 0.

A pre-cxx11 libtorch cannot be downloaded here, so this configures the project (configure only,
no build) against a wrapper of the real TorchConfig.cmake that reports -D_GLIBCXX_USE_CXX11_ABI=0
the way pytorch.org's pre-cxx11 libtorch does (in TORCH_CXX_FLAGS and on the torch target), then
checks compile_commands.json: every translation unit of every target must be compiled with =0 and
none with =1, and the exported ovseg::ovseg target must hand =0 to its consumers. Fails naming the
files that miss it. Cost: one CMake configure (about 10-20 s).

usage: check_torch_abi.py --source DIR --work DIR --torch-dir DIR [--shared DIR] [--generator G]
       [--cmake CMAKE]
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

WRAPPER = """\
# Test wrapper: the real TorchConfig.cmake, reporting the pre-cxx11 ABI (like pytorch.org's
# pre-cxx11 libtorch does).
include("{real}/TorchConfig.cmake")
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")
set_property(TARGET torch PROPERTY INTERFACE_COMPILE_OPTIONS "${{TORCH_CXX_FLAGS}}")
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--torch-dir", required=True, help="the real Torch_DIR")
    p.add_argument("--shared", default="")
    p.add_argument("--generator", default="Ninja")
    p.add_argument("--cmake", default="cmake", help="the cmake program")
    args = p.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    fake = os.path.join(args.work, "torch-abi0")
    os.makedirs(fake)
    with open(os.path.join(fake, "TorchConfig.cmake"), "w", encoding="utf-8") as f:
        f.write(WRAPPER.format(real=os.path.abspath(args.torch_dir)))
    build = os.path.join(args.work, "build")
    cmd = [
        args.cmake,
        "-S",
        args.source,
        "-B",
        build,
        "-G",
        args.generator,
        f"-DTorch_DIR={fake}",
        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    if args.shared:
        cmd.append(f"-DOVSEG_SHARED_DIR={args.shared}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"configure failed ({r.returncode}):\n{r.stdout}\n{r.stderr}", file=sys.stderr)
        return 1
    if "pre-C++11 libstdc++ ABI" not in r.stderr:
        print("no configure warning about the pre-C++11 ABI", file=sys.stderr)
        return 1

    with open(os.path.join(build, "compile_commands.json"), "r", encoding="utf-8") as f:
        commands = json.load(f)
    bad = []
    for c in commands:
        line = c.get("command") or " ".join(c.get("arguments", []))
        if "-D_GLIBCXX_USE_CXX11_ABI=0" not in line or "-D_GLIBCXX_USE_CXX11_ABI=1" in line:
            bad.append(os.path.relpath(c["file"], args.source))
    sources = {os.path.relpath(c["file"], args.source) for c in commands}
    # the check must see every part: library object libraries, CLI, tests, benchmarks
    for part in (
        "src/common/",
        "src/text/",
        "src/image/",
        "src/eval/",
        "src/pipeline/",
        "tools/ovseg/",
        "tests/",
        "tools/bench/",
    ):
        if not any(s.startswith(part) for s in sources):
            print(f"no translation unit under {part} in compile_commands.json", file=sys.stderr)
            return 1
    if bad:
        print(
            f"{len(bad)} of {len(commands)} translation units miss torch's -D_GLIBCXX_USE_CXX11_ABI=0:", file=sys.stderr
        )
        for b in sorted(bad):
            print("  " + b, file=sys.stderr)
        return 1
    exported = glob.glob(os.path.join(build, "CMakeFiles", "Export", "**", "ovsegTargets.cmake"), recursive=True)
    if not exported or not any("_GLIBCXX_USE_CXX11_ABI=0" in open(e, encoding="utf-8").read() for e in exported):
        print(
            "the exported ovseg::ovseg target does not pass _GLIBCXX_USE_CXX11_ABI=0 to consumers "
            f"({exported or 'no ovsegTargets.cmake'})",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(commands)} translation units use -D_GLIBCXX_USE_CXX11_ABI=0; exported to consumers")
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
