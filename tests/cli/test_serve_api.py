"""`ovseg serve` through its HTTP API, on the repository's demo model (needs no ../shared): the real
binary on 127.0.0.1, started and stopped by PID by each test class.

Checked: /health (loading, then ok; answers while the worker is busy), /v1/model, /v1/datasets,
POST /v1/segment in its three formats byte-identical to `ovseg segment` for the same image and
options, the analysis cache (a second class list is classified from it, also without uploading the
image again), every refusal (400 fields, 401 key, 413 body, 415 not an image, 422 undecodable or
too many pixels, 503 queue full), cancel on disconnect, slow clients timing out without holding the
worker, SIGTERM with a request in flight, /metrics, and a bounded resident memory.

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
"""
import base64
import concurrent.futures
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np
from PIL import Image

from demo_env import BIN, DEMO, require_binary
from serve_util import Server, json_of, metric, multipart, request, segment

IMAGES = os.path.join(DEMO, "examples", "images")
EXAMPLE = os.path.join(IMAGES, "heldout_2026_00001.png")
CLASSES = "sky, grass, red star, dotted blue star, brick wall"
TMP = None


def setUpModule():
    global TMP
    require_binary()
    TMP = tempfile.mkdtemp(prefix="ovseg_serve_")


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


def env():
    return {"OVSEG_CACHE_DIR": os.path.join(TMP, "text-cache")}


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(seed, size=(96, 128)):
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def slow_png(side=2600):
    """A large, well-compressed image: the demo model's score maps at this size take about a second."""
    y, x = np.mgrid[0:side, 0:side]
    a = np.stack([(x * 255 // side), (y * 255 // side), ((x + y) * 127 // side)], axis=-1).astype(np.uint8)
    return png_bytes(a)


def cli_segment(out, classes, *extra, image=EXAMPLE):
    p = subprocess.run(
        [BIN, "-q", "segment", "-m", DEMO, "-c", classes, "-o", out, "--overlay", "--json", *extra, image],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **env()),
    )
    assert p.returncode == 0, p.stderr
    stem = os.path.splitext(os.path.basename(image))[0]
    with open(os.path.join(out, stem + ".png"), "rb") as f:
        png = f.read()
    with open(os.path.join(out, stem + ".overlay.png"), "rb") as f:
        overlay = f.read()
    with open(os.path.join(out, stem + ".json")) as f:
        report = json.load(f)
    return png, overlay, report


class ServeApi(unittest.TestCase):
    """One server for the read-only checks."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-pixels", "4000000", "--max-body-mb", "2", env=env(), wait=False)
        # The socket listens before the model loads: the first answers are 503 "loading".
        cls.health_before_ready = []
        deadline = time.time() + 120
        while time.time() < deadline:
            status, headers, body = request(cls.server.url + "/health", timeout=5)
            cls.health_before_ready.append((status, json_of(body)))
            if status == 200:
                break
            time.sleep(0.01)

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, "serve exited with %s" % code

    def test_health_loading_then_ok(self):
        statuses = self.health_before_ready
        self.assertEqual(statuses[-1], (200, {"status": "ok", "queue": 0, "busy": False}))
        for status, body in statuses[:-1]:
            self.assertEqual((status, body), (503, {"status": "loading"}))
        self.assertGreater(len(statuses), 1, "no /health answer came before the model was loaded")

    def test_model_info(self):
        status, _, body = request(self.server.url + "/v1/model")
        self.assertEqual(status, 200)
        m = json_of(body)
        self.assertEqual(m["name"], "ovseg-demo")
        self.assertEqual(m["proposals"], ["maskformer"])
        self.assertAlmostEqual(m["defaults"]["eval"]["ensemble_weight"], 0.8, places=6)
        self.assertEqual(m["limits"]["max_pixels"], 4000000)
        self.assertEqual(m["limits"]["max_body_bytes"], 2 << 20)
        self.assertEqual(len(m["fingerprint"]), 64)

    def test_datasets(self):
        status, _, body = request(self.server.url + "/v1/datasets")
        self.assertEqual(status, 200)
        names = {d["name"]: d["classes"] for d in json_of(body)["datasets"]}
        self.assertEqual(names["ade150"], 150)
        self.assertEqual(names["ade847"], 847)
        status, _, body = request(self.server.url + "/v1/datasets/pc59")
        self.assertEqual(status, 200)
        self.assertEqual(len(json_of(body)["classes"]), 59)
        status, _, body = request(self.server.url + "/v1/datasets/nope")
        self.assertEqual(status, 404)
        self.assertEqual(json_of(body)["error"]["code"], 404)

    def test_outputs_equal_the_cli(self):
        out = os.path.join(TMP, "cli_default")
        cli_png, cli_overlay, cli_report = cli_segment(out, CLASSES)
        status, headers, png = segment(self.server, EXAMPLE, classes=CLASSES, format="png")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "image/png")
        self.assertEqual(png, cli_png)
        status, _, overlay = segment(self.server, EXAMPLE, classes=CLASSES, format="overlay")
        self.assertEqual(status, 200)
        self.assertEqual(overlay, cli_overlay)
        status, headers, body = segment(self.server, EXAMPLE, classes=CLASSES)
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("application/json"))
        report = json_of(body)
        self.assertEqual(base64.b64decode(report["label_png"]), cli_png)
        # The same document as --json, but for the paths the CLI wrote and the times.
        for key in (
            "classes",
            "width",
            "height",
            "mode",
            "mask_threshold",
            "ensemble_weight",
            "clip_ensemble",
            "pixel_share",
            "unlabeled",
            "segments",
            "resized",
            "model",
            "device",
            "precision",
        ):
            self.assertEqual(report[key], cli_report[key], key)
        self.assertEqual(report["label_map"]["bit_depth"], cli_report["label_map"]["bit_depth"])
        self.assertEqual(set(report["timings_ms"]) - {"queue"}, set(cli_report["timings_ms"]))
        self.assertEqual(report["input"], "heldout_2026_00001.png")
        self.assertEqual(len(report["image_sha256"]), 64)
        legend = [e["class"] for e in report["legend"]]
        self.assertEqual(sorted(legend), sorted(s["class"] for s in report["pixel_share"]))

    def test_options_equal_the_cli(self):
        cases = [
            ({"mode": "demo"}, ["--mode", "demo"]),
            ({"mask_threshold": "0.3", "ensemble_weight": "0.25"}, ["-t", "0.3", "-w", "0.25"]),
            ({"maskformer_only": "true"}, ["--maskformer-only"]),
            ({"mode": "demo", "ensemble_weight": "0.5"}, ["--mode", "demo", "-w", "0.5"]),
        ]
        for i, (fields, flags) in enumerate(cases):
            with self.subTest(fields=fields):
                cli_png, _, cli_report = cli_segment(os.path.join(TMP, "cli_opt%d" % i), "sky, red star", *flags)
                status, _, body = segment(self.server, EXAMPLE, classes="sky, red star", **fields)
                self.assertEqual(status, 200, body)
                report = json_of(body)
                self.assertEqual(base64.b64decode(report["label_png"]), cli_png)
                self.assertEqual(report["segments"], cli_report["segments"])
                self.assertEqual(report["ensemble_weight"], cli_report["ensemble_weight"])

    def test_one_class_and_a_dataset_list(self):
        cli_png, _, _ = cli_segment(os.path.join(TMP, "cli_one"), "sky", "--mode", "demo")
        status, _, png = segment(self.server, EXAMPLE, classes="sky", mode="demo", format="png")
        self.assertEqual(status, 200)
        self.assertEqual(png, cli_png)
        status, _, body = segment(self.server, EXAMPLE, dataset="ade150")
        self.assertEqual(status, 200, body)
        self.assertEqual(len(json_of(body)["classes"]), 150)

    def test_a_second_class_list_comes_from_the_cache(self):
        img = noise_png(1)
        status, _, body = segment(self.server, image_bytes=img, classes="sky, grass")
        self.assertEqual(status, 200)
        first = json_of(body)
        self.assertFalse(first["cached"])
        self.assertGreater(first["timings_ms"]["proposals"], 0)
        status, _, body = segment(self.server, image_bytes=img, classes="red star, brick wall, sky")
        self.assertEqual(status, 200)
        second = json_of(body)
        self.assertTrue(second["cached"])
        # The class-agnostic stages did not run for it.
        for stage in ("preprocess", "proposals", "regions", "clip"):
            self.assertEqual(second["timings_ms"][stage], 0, stage)
        # Without the upload: the image by its hash.
        status, _, body = segment(self.server, image_sha256=first["image_sha256"], classes="red star, brick wall, sky")
        self.assertEqual(status, 200)
        third = json_of(body)
        self.assertTrue(third["cached"])
        self.assertEqual(third["label_png"], second["label_png"])
        # Another threshold is another analysis.
        status, _, body = segment(self.server, image_bytes=img, classes="sky, grass", mask_threshold="0.2")
        self.assertFalse(json_of(body)["cached"])
        status, _, body = segment(self.server, image_sha256="0" * 64, classes="sky")
        self.assertEqual(status, 404)
        self.assertEqual(json_of(body)["error"]["type"], "image_not_cached")

    def assert_error(self, answer, status, type_=None):
        got, headers, body = answer
        self.assertEqual(got, status, body)
        doc = json_of(body)
        self.assertEqual(set(doc), {"error"})
        self.assertEqual(set(doc["error"]), {"code", "type", "message"})
        self.assertEqual(doc["error"]["code"], status)
        self.assertTrue(doc["error"]["message"])
        if type_:
            self.assertEqual(doc["error"]["type"], type_)
        return doc["error"]["message"]

    def test_bad_fields_are_400(self):
        s = self.server
        cases = [
            dict(classes=""),
            dict(classes="sky,,grass"),
            dict(classes="sky, Sky"),
            dict(classes=b"sky, \xff\xfe"),
            dict(),
            dict(classes="sky", dataset="ade150"),
            dict(dataset="nope"),
            dict(classes="sky", mode="fast"),
            dict(classes="sky", mask_threshold="1.5"),
            dict(classes="sky", mask_threshold="nan"),
            dict(classes="sky", ensemble_weight="-0.1"),
            dict(classes="sky", ensemble_weight="abc"),
            dict(classes="sky", maskformer_only="maybe"),
            dict(classes="sky", maskformer_only="1", mode="demo"),
            dict(classes="sky", proposals="sam"),
            dict(classes="sky", proposals="other"),
            dict(classes="sky", granularity="0.5"),
            dict(classes="sky", format="gif"),
            dict(classes="sky", colour="red"),
            dict(classes="sky", request_id="../../etc"),
            dict(classes="sky", confidence="1", format="png"),
        ]
        for fields in cases:
            with self.subTest(fields=fields):
                self.assert_error(segment(s, EXAMPLE, **fields), 400)
        # A bound on the names of one request (each costs the worker text features).
        many = ",".join("c%d" % i for i in range(4097))
        self.assertIn("at most 4096", self.assert_error(segment(s, EXAMPLE, classes=many), 400, "invalid_classes"))
        # No image, or both an image and a hash.
        self.assert_error(request(s.url + "/v1/segment", {"classes": "sky"}), 400)
        self.assert_error(segment(s, EXAMPLE, classes="sky", image_sha256="ab"), 400)
        # A field may not come twice.
        with open(EXAMPLE, "rb") as f:
            body, ctype = multipart({"classes": "sky", "image": ("a.png", f.read())})
        boundary = ctype.split("boundary=")[1]
        twice = ('--%s\r\nContent-Disposition: form-data; name="classes"\r\n\r\ngrass\r\n' % boundary).encode() + body
        self.assert_error(_post_bytes(s, twice, ctype), 400)
        # GET has no such route.
        self.assertIn(request(s.url + "/v1/segment")[0], (404, 405))

    def test_not_an_image_is_415_and_undecodable_422(self):
        s = self.server
        self.assert_error(segment(s, image_bytes=b"hello, this is text", classes="sky"), 415, "not_an_image")
        # A request cannot name a file on the server: a path is just bytes that are not an image.
        self.assert_error(request(s.url + "/v1/segment", {"classes": "sky", "image": ("x", b"/etc/passwd")}), 415)
        with open(EXAMPLE, "rb") as f:
            data = f.read()
        self.assert_error(segment(s, image_bytes=data[: len(data) // 3], classes="sky"), 422, "bad_image")
        self.assert_error(request(s.url + "/v1/segment", method="POST", headers={"Content-Type": "text/plain"}), 415)

    def test_too_many_pixels_is_refused_from_the_header(self):
        # 4 000 000 is the limit: a 2001 x 2000 PNG is refused; it compresses to a few kB.
        big = png_bytes(np.zeros((2000, 2001, 3), dtype=np.uint8))
        self.assertLess(len(big), 2 << 20)
        message = self.assert_error(segment(self.server, image_bytes=big, classes="sky"), 422, "bad_image")
        self.assertIn("too large", message)

    def test_page_scores_are_left_out_when_the_score_map_would_be_huge(self):
        # 2000 x 2000 pixels x 151 channels of float32 = 2.4 GB: not allocated for the page's hover.
        img = png_bytes(np.full((2000, 2000, 3), 90, dtype=np.uint8))
        status, _, body = segment(self.server, image_bytes=img, dataset="ade150", confidence="1")
        self.assertEqual(status, 200, body[:300])
        doc = json_of(body)
        self.assertIn("confidence_omitted", doc)
        self.assertIn("pixels_png", doc)
        status, _, body = segment(self.server, EXAMPLE, classes="sky, grass", confidence="1")
        self.assertNotIn("confidence_omitted", json_of(body))

    def test_body_over_the_limit_is_413(self):
        big = os.urandom(3 << 20)
        self.assert_error(segment(self.server, image_bytes=b"\x89PNG\r\n\x1a\n" + big, classes="sky"), 413)

    def test_unknown_paths_are_404_json(self):
        self.assert_error(request(self.server.url + "/v2/nothing"), 404)

    def test_page_is_served(self):
        status, headers, body = request(self.server.url + "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        text = body.decode("utf-8")
        self.assertIn("<title>ovseg</title>", text)
        self.assertNotIn("http://", text.replace("http://127.0.0.1", ""))  # nothing from elsewhere

    def test_metrics(self):
        segment(self.server, EXAMPLE, classes="sky")
        status, headers, body = request(self.server.url + "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn('ovseg_requests_total{route="/v1/segment",status="200"}', text)
        for name in (
            "ovseg_queue_depth",
            "ovseg_in_flight",
            "ovseg_cache_hits_total",
            "ovseg_cache_misses_total",
            "ovseg_cache_bytes",
            "ovseg_request_seconds_bucket",
            'ovseg_stage_seconds_bucket{stage="clip"',
            "ovseg_model_loaded 1",
        ):
            self.assertIn(name, text)


def _post_bytes(server, body, ctype):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(server.url + "/v1/segment", data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class ServeAuth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--api-key", "s3cret", env=env())

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_key(self):
        s = self.server
        status, headers, body = segment(s, EXAMPLE, classes="sky")
        self.assertEqual(status, 401)
        self.assertEqual(json_of(body)["error"]["type"], "unauthorized")
        self.assertEqual(segment(s, EXAMPLE, classes="sky", headers={"Authorization": "Bearer nope"})[0], 401)
        self.assertEqual(segment(s, EXAMPLE, classes="sky", headers={"X-Api-Key": "s3cre"})[0], 401)
        self.assertEqual(segment(s, EXAMPLE, classes="sky", headers={"Authorization": "Bearer s3cret"})[0], 200)
        self.assertEqual(segment(s, EXAMPLE, classes="sky", headers={"X-Api-Key": "s3cret"})[0], 200)
        self.assertEqual(request(s.url + "/v1/model")[0], 401)
        self.assertEqual(request(s.url + "/metrics")[0], 401)
        self.assertEqual(request(s.url + "/metrics", headers={"X-Api-Key": "s3cret"})[0], 200)
        # /health and the page need none.
        self.assertEqual(request(s.url + "/health")[0], 200)
        self.assertEqual(request(s.url + "/")[0], 200)


class ServeLoad(unittest.TestCase):
    """A server of its own per test: queue, cancel, slow clients, SIGTERM, memory."""

    def test_full_queue_is_503_with_retry_after(self):
        with Server("--queue", "1", env=env()) as s:
            slow = slow_png()
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                answers = list(
                    pool.map(
                        lambda i: segment(
                            s, image_bytes=slow, classes="sky, grass, red star, brick wall", format="png"
                        ),
                        range(6),
                    )
                )
            statuses = sorted(a[0] for a in answers)
            self.assertIn(503, statuses)
            self.assertIn(200, statuses)
            self.assertEqual(set(statuses), {200, 503})
            for status, headers, body in answers:
                if status == 503:
                    self.assertEqual(headers.get("Retry-After"), "2")
                    self.assertEqual(json_of(body)["error"]["type"], "queue_full")

    def test_health_answers_while_busy_and_a_queued_request_is_dropped_when_its_client_leaves(self):
        with Server("--queue", "4", env=env()) as s:
            slow = slow_png()
            first = {}
            t = threading.Thread(
                target=lambda: first.update(
                    a=segment(
                        s, image_bytes=slow, classes="sky, grass, red star, brick wall, dotted blue star", format="png"
                    )
                )
            )
            t.start()
            _wait_until(lambda: json_of(request(s.url + "/health")[2])["busy"])
            t0 = time.time()
            status, _, body = request(s.url + "/health", timeout=1)
            self.assertEqual(status, 200)
            self.assertLess(time.time() - t0, 1.0)
            # A second request waits in the queue; its client goes away: it never runs.
            body2, ctype = multipart({"image": ("n.png", noise_png(7)), "classes": "sky"})
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(
                (
                    "POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    % (ctype, len(body2))
                ).encode()
                + body2
            )
            _wait_until(lambda: metric(s, "ovseg_queue_depth") == 1)
            sock.close()
            _wait_until(lambda: metric(s, "ovseg_requests_cancelled_total") == 1)
            self.assertEqual(metric(s, "ovseg_queue_depth"), 0)
            t.join()
            self.assertEqual(first["a"][0], 200)
            self.assertEqual(metric(s, "ovseg_cache_misses_total"), 1)  # the dropped one never ran

    def test_slow_clients_time_out_without_holding_the_worker(self):
        with Server("--request-timeout", "2", env=env()) as s:
            # A header that never ends, and a body that stops half-way.
            a = socket.create_connection(("127.0.0.1", s.port))
            a.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            b = socket.create_connection(("127.0.0.1", s.port))
            body, ctype = multipart({"image": ("n.png", noise_png(3)), "classes": "sky"})
            b.sendall(
                (
                    "POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    % (ctype, len(body))
                ).encode()
                + body[: len(body) // 2]
            )
            # Meanwhile the service answers others.
            status, _, _ = segment(s, EXAMPLE, classes="sky", format="png")
            self.assertEqual(status, 200)
            t0 = time.time()
            for sock in (a, b):
                sock.settimeout(20)
                while True:  # the server closes them (any answer it sends first is an error)
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                sock.close()
            self.assertLess(time.time() - t0, 15)
            self.assertGreaterEqual(metric(s, "ovseg_connections_timed_out_total"), 1)
            self.assertEqual(metric(s, "ovseg_cache_misses_total"), 1)  # only the complete request ran

    def test_sigterm_finishes_the_request_in_flight(self):
        s = Server(env=env())
        try:
            answer = {}
            t = threading.Thread(
                target=lambda: answer.update(
                    a=segment(
                        s,
                        image_bytes=slow_png(),
                        classes="sky, grass, red star, brick wall, dotted blue star",
                        format="png",
                    )
                )
            )
            t.start()
            _wait_until(lambda: json_of(request(s.url + "/health")[2])["busy"])
            code = s.stop()
            t.join()
            self.assertEqual(code, 0)
            self.assertEqual(answer["a"][0], 200)
            Image.open(io.BytesIO(answer["a"][2])).verify()
            self.assertIn("stopping", "".join(s.stderr_lines))
        finally:
            s.kill()

    def test_a_model_that_does_not_load_is_exit_2_and_a_bad_option_too(self):
        bad = os.path.join(TMP, "not-a-bundle")
        os.makedirs(bad, exist_ok=True)
        with open(os.path.join(bad, "manifest.json"), "w") as f:
            f.write("{ not json")
        p = subprocess.run([BIN, "serve", "-m", bad, "--port", "0"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("manifest.json", p.stderr)
        self.assertIn("listening on http://127.0.0.1:", p.stdout)  # it listened, then stopped
        p = subprocess.run([BIN, "serve", "-m", DEMO, "--queue", "0"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        p = subprocess.run(
            [BIN, "serve", "-m", os.path.join(TMP, "missing")], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(p.returncode, 2)
        self.assertIn("bundle directory not found", p.stderr)

    def test_resident_memory_stays_bounded(self):
        with Server("--cache-mb", "16", env=env()) as s:
            lists = ["sky, grass", "red star, brick wall", "sky, dotted blue star, grass", "brick wall"]

            def burst(n, offset):
                for i in range(n):
                    # 12 images cycled: some analyses still cached, others evicted (16 MB hold ~15).
                    img = noise_png(1000 + (offset + i) % 12, size=(192, 256))
                    status, _, _ = segment(s, image_bytes=img, classes=lists[i % len(lists)])
                    self.assertEqual(status, 200)

            burst(100, 0)
            after_warmup = s.rss_kb()
            burst(200, 100)
            after = s.rss_kb()
            cache = metric(s, "ovseg_cache_bytes")
            self.assertLessEqual(cache, 16 << 20)
            self.assertGreater(metric(s, "ovseg_cache_hits_total"), 0)
            # Growth after the warm-up stays small (allocator noise), not proportional to requests.
            self.assertLess(after - after_warmup, 60 * 1024, (after_warmup, after))


def _wait_until(cond, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


if __name__ == "__main__":
    unittest.main()
