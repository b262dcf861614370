"""What the CLI tests that need no ../shared have in common: the repository's paths, the built
binary (OVSEG_BIN, set by ctest) and the exporters' torch; each test module skips with a reason when
one is missing."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEMO = os.path.join(ROOT, "models", "demo")
BIN = os.environ.get("OVSEG_BIN", "")
PY = sys.executable


def require_binary():
    if not BIN or not os.access(BIN, os.X_OK):
        raise unittest.SkipTest("OVSEG_BIN is not set to the built ovseg binary")


def require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("no torch for this Python (the exporters' python3-torch)")
