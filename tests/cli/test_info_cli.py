"""End-to-end tests of `ovseg info`, driving the built binary on the bundle that ctest's
`export_fixture_bundles` fixture exports (OVSEG_TEST_BUNDLE_DIR/tiny_swin_vit). Skipped with a
message when the binary or the bundle is absent."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

BIN = os.environ.get("OVSEG_BIN", "")
BUNDLE = os.path.join(os.environ.get("OVSEG_TEST_BUNDLE_DIR", ""), "tiny_swin_vit")


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


class InfoTest(unittest.TestCase):
    def setUp(self):
        if not BIN or not os.access(BIN, os.X_OK):
            self.skipTest("OVSEG_BIN is not set to the built ovseg binary")
        if not os.path.isfile(os.path.join(BUNDLE, "manifest.json")):
            self.skipTest(
                f"test bundle not found: {BUNDLE} (ctest's export_fixture_bundles writes it; "
                "set OVSEG_TEST_BUNDLE_DIR)"
            )
        with open(os.path.join(BUNDLE, "manifest.json"), encoding="utf-8") as f:
            self.manifest = json.load(f)

    def test_describes_the_manifest_in_words(self):
        p = run("info", "--model", BUNDLE)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        m = self.manifest
        self.assertIn(m["name"], out)
        self.assertIn(m["architecture"]["backbone"], out)
        self.assertIn(m["architecture"]["clip"]["model_name"], out)
        self.assertRegex(out, rf"queries\s+{m['architecture']['num_queries']}\b")
        self.assertRegex(out, rf"shortest edge {m['preprocess']['min_size_test']}\b")
        self.assertIn(f"longest at most {m['preprocess']['max_size_test']}", out)
        for path in ("eval", "demo"):
            thr = m["inference"][path]["mask_threshold"]
            w = m["inference"][path]["ensemble_weight"]
            self.assertRegex(out, rf"{path} mode\s+mask threshold {thr:g}, ensemble weight {w:g}")
        self.assertIn(m["text"]["template_set"], out)
        for t in m["text"]["templates"]:
            self.assertIn(f'"{t}"', out)
        self.assertIn(m["text"]["tokenizer"]["file"], out)
        # Every file with its checksum — and the checksums are the files' real ones.
        for name, entry in m["files"].items():
            line = next((ln for ln in out.splitlines() if ln.strip().startswith(name)), None)
            self.assertIsNotNone(line, name)
            with open(os.path.join(BUNDLE, name), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), entry["sha256"])
            self.assertIn(entry["sha256"], line)

    def test_json_prints_the_manifest(self):
        p = run("info", "--model", BUNDLE, "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), self.manifest)

    def test_missing_bundle_is_a_model_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "nothing_here")
            p = run("info", "--model", missing)
            self.assertEqual(p.returncode, 2)
            self.assertIn("nothing_here", p.stderr)

    def test_corrupt_bundle_names_the_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "bundle")
            shutil.copytree(BUNDLE, copy)
            victim = self.manifest["modules"]["clip_text"]
            with open(os.path.join(copy, victim), "r+b") as f:
                f.seek(100)
                b = f.read(1)
                f.seek(100)
                f.write(bytes([b[0] ^ 0xFF]))
            p = run("info", "--model", copy)
            self.assertEqual(p.returncode, 2, p.stdout)
            self.assertIn(victim, p.stderr)

    def test_model_is_required(self):
        p = run("info")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--model", p.stderr)


if __name__ == "__main__":
    unittest.main()
