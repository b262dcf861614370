#!/usr/bin/python3
"""Export a SAM bundle from every SAM fixture (ctest setup fixture `sam_bundles`): OUT/<name>/
with tools/ovseg-export-sam (and the fixture's arch.json for what tensors do not show).
Exit 77 (ctest "skipped") when there is no SAM fixture."""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sam_fixtures  # noqa: E402

sys.path.insert(0, os.path.join(sam_fixtures.REPO, "tools"))
from ovseg_export.sam_export import export_sam  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fx = sam_fixtures.sam_fixtures()
    if not fx:
        print("SKIP: no SAM fixture under", sam_fixtures.SHARED)
        return 77
    for d, _meta in fx:
        arch = os.path.join(d, "arch.json")
        overrides = {}
        if os.path.exists(arch):
            with open(arch, "r", encoding="utf-8") as f:
                overrides = json.load(f)
        res = export_sam(
            os.path.join(args.out, os.path.basename(d)), os.path.join(d, "checkpoint.pth"), overrides, quiet=True
        )
        print("exported", res["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
