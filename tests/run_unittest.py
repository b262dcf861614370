"""Runs one unittest module for ctest and makes skips visible.

ctest knows only an exit code: a module whose every test skipped (no ../shared, no bundle) would
show as "Passed". This runner exits 77 then (the tests' SKIP_RETURN_CODE), 1 on a failure or an
error, 0 when at least one test ran and none failed.

    python3 run_unittest.py MODULE   (run in the module's directory)
"""
import os
import sys
import unittest


class _CountingResult(unittest.TextTestResult):
    """Counts the tests that ran and passed (a class skipped in setUpClass runs none)."""

    passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def main(argv):
    if len(argv) != 2:
        print("usage: run_unittest.py MODULE", file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())  # as `python -m unittest` does: the module sits in the working directory
    suite = unittest.defaultTestLoader.loadTestsFromName(argv[1])
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stderr, resultclass=_CountingResult)
    result = runner.run(suite)
    if not result.wasSuccessful():
        return 1
    if result.passed == 0:
        reasons = sorted({reason for _, reason in result.skipped})
        print(
            f"run_unittest: no test of {argv[1]} ran ({len(result.skipped)} skipped): " + "; ".join(reasons),
            file=sys.stderr,
        )
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
