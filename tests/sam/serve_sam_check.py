#!/usr/bin/python3
"""`ovseg serve --sam-model` on every SAM fixture with a classification (its SAM bundle and ov-seg
bundle): proposals=sam answers the label map `ovseg segment --proposals sam` writes, byte for byte;
a second granularity and a second class list for the same image come from the cached SAM analysis
(the generator does not run again) and still equal the CLI's. /v1/model lists both proposal kinds.
Exit 77 without such a fixture. Cost: a few SAM runs of the fixture image."""
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "cli"))
import sam_fixtures as sf  # noqa: E402
from serve_util import Server, json_of, metric, multipart, request, segment  # noqa: E402

BIN, SAM_BUNDLES, ov_bundle = sf.BIN, sf.SAM_BUNDLES, sf.ov_bundle
FIXTURES = sf.classify_fixtures()


def setUpModule():
    if not FIXTURES:
        raise unittest.SkipTest(f"no SAM fixture with a classification under {sf.SHARED}")


class ServeSam(unittest.TestCase):
    def cli_png(self, d, meta, classes, granularity, tmp):
        out = os.path.join(tmp, "g%s_%d" % (granularity, len(classes)))
        p = subprocess.run(
            [
                BIN,
                "-q",
                "segment",
                "--proposals",
                "sam",
                "--sam-model",
                os.path.join(SAM_BUNDLES, os.path.basename(d)),
                "-m",
                ov_bundle(meta),
                "-c",
                classes,
                "--granularity",
                str(granularity),
                "--no-text-cache",
                "-o",
                out,
                *sf.generator_flags(meta),
                os.path.join(d, "image.png"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "image.png"), "rb") as f:
            return f.read()

    def test_sam_proposals_and_the_cache(self):
        for d, meta in FIXTURES:
            run = next(iter(meta["classify"]["runs"].values()))
            classes = ",".join(run["classes"])
            other = ",".join(list(reversed(run["classes"]))[:2] or ["sky"])
            with self.subTest(fixture=os.path.basename(d)), tempfile.TemporaryDirectory() as tmp:
                with Server(
                    "--sam-model",
                    os.path.join(SAM_BUNDLES, os.path.basename(d)),
                    "--no-text-cache",
                    *sf.generator_flags(meta),
                    model=ov_bundle(meta),
                ) as s:
                    status, _, body = request(s.url + "/v1/model")
                    self.assertEqual(json_of(body)["proposals"], ["maskformer", "sam"])
                    image = os.path.join(d, "image.png")
                    status, _, body = segment(s, image, classes=classes, proposals="sam", granularity="1")
                    self.assertEqual(status, 200, body)
                    first = json_of(body)
                    self.assertFalse(first["cached"])
                    self.assertEqual(first["proposals"], "sam")
                    self.assertGreater(first["timings_ms"]["proposals"], 0)
                    self.assertEqual(base64.b64decode(first["label_png"]), self.cli_png(d, meta, classes, 1, tmp))
                    for g, names in ((0.5, classes), (0.8, other)):
                        status, _, body = segment(s, image, classes=names, proposals="sam", granularity=str(g))
                        self.assertEqual(status, 200, body)
                        doc = json_of(body)
                        self.assertTrue(doc["cached"], g)
                        self.assertEqual(doc["timings_ms"]["proposals"], 0)
                        self.assertEqual(base64.b64decode(doc["label_png"]), self.cli_png(d, meta, names, g, tmp))
                    # A running request whose client goes away stops at its next stage: here the
                    # classification after the SAM analysis (which is kept: a later request uses it).
                    self.cancel_while_running(s, d, classes)
                    # MaskFormer proposals on the same server, same image: their own analysis.
                    status, _, body = segment(s, image, classes=classes)
                    self.assertEqual(status, 200, body)
                    self.assertFalse(json_of(body)["cached"])

    def cancel_while_running(self, s, d, classes):
        from PIL import Image

        big = os.path.join(tempfile.mkdtemp(prefix="ovseg_sam_cancel_"), "big.png")
        Image.open(os.path.join(d, "image.png")).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).save(big)
        with open(big, "rb") as f:
            body, ctype = multipart(
                {"image": ("big.png", f.read()), "classes": classes, "proposals": "sam", "request_id": "cancelme"}
            )
        posts_before = metric(s, 'ovseg_stage_seconds_count{stage="post"}')
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall(
            (
                "POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (ctype, len(body))
            ).encode()
            + body
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            status, _, job = request(s.url + "/v1/jobs/cancelme")
            if status == 200 and json_of(job)["stage"] == "sam":
                break
            time.sleep(0.005)
        else:
            self.fail("the request never reached the SAM stage")
        sock.close()
        deadline = time.time() + 120
        while metric(s, "ovseg_requests_cancelled_total") < 1 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(metric(s, "ovseg_requests_cancelled_total"), 1)
        self.assertEqual(metric(s, 'ovseg_stage_seconds_count{stage="post"}'), posts_before)  # never classified
        status, _, body = segment(s, big, classes=classes, proposals="sam")
        self.assertEqual(status, 200, body)
        self.assertTrue(json_of(body)["cached"])


if __name__ == "__main__":
    sf.main_or_skip(FIXTURES, "with a classification")
