"""Starting and stopping a real `ovseg serve` for the tests: loopback only, a free port (the server
picks it: --port 0, and prints its URL), waiting on /health, and stopping it by its PID (SIGTERM,
then SIGKILL if it does not go), whatever happens in the test."""
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

from demo_env import BIN, DEMO


class Server:
    def __init__(self, *args, model=DEMO, wait=True, env=None):
        cmd = [BIN, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {}))
        )
        self.stderr_lines = []
        self._err = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err.start()
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.kill()
            raise RuntimeError("serve printed no URL: %r; stderr: %s" % (line, "".join(self.stderr_lines)))
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d" % self.port
        if wait:
            self.wait_ready()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("serve exited with %s: %s" % (self.proc.returncode, "".join(self.stderr_lines)))
            try:
                status, _, _ = request(self.url + "/health", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("serve did not become ready in %d s" % timeout)

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self._err.join(timeout=5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.kill()


def multipart(fields):
    """fields: {name: str | (filename, bytes)} → (body, content type)."""
    boundary = "ovsegtest" + uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            out.append(
                (
                    '--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name, filename)
                ).encode()
            )
            out.append(data)
            out.append(b"\r\n")
        else:
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            out.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, name)).encode())
            out.append(data)
            out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def request(url, fields=None, headers=None, timeout=120, method=None):
    """(status, headers, body bytes); HTTP errors are answers too."""
    data = None
    h = dict(headers or {})
    if fields is not None:
        data, ctype = multipart(fields)
        h["Content-Type"] = ctype
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def segment(server, image_path=None, image_bytes=None, headers=None, timeout=120, **fields):
    if image_path is not None:
        with open(image_path, "rb") as f:
            fields["image"] = (os.path.basename(image_path), f.read())
    elif image_bytes is not None:
        fields["image"] = ("upload.png", image_bytes)
    return request(server.url + "/v1/segment", fields, headers=headers, timeout=timeout)


def json_of(body):
    return json.loads(body.decode("utf-8"))


def metric(server, name):
    """The value of one Prometheus line of /metrics (name with its labels), 0 when absent."""
    _, _, body = request(server.url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
