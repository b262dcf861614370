"""The page of `ovseg serve` (GET /) in a real headless browser: Debian's chromium and
chromium-driver through python3-selenium. Upload an example image of the demo model, type class
names, wait for the legend, check its names; change a class and see the legend follow from the
cached analysis, without a new upload; the label map the page offers equals `ovseg segment`'s.

Skips (with the reason) when chromium, chromedriver or selenium is missing. Writes a screenshot of
the page to $OVSEG_BINARY_DIR/serve_page.png (the README's picture comes from it).

Environment (set by ctest): OVSEG_BIN = the built `ovseg`, OVSEG_BINARY_DIR = the build tree.
"""
import base64
import os
import shutil
import subprocess
import tempfile
import unittest

from demo_env import BIN, DEMO, require_binary
from serve_util import Server

IMAGE = os.path.join(DEMO, "examples", "images", "heldout_2026_00001.png")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def setUpModule():
    require_binary()
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("python3-selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            raise unittest.SkipTest(path + " is not installed (Debian: chromium, chromium-driver)")


class ServePage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as ChromeService

        cls.tmp = tempfile.mkdtemp(prefix="ovseg_page_")
        cls.server = Server(env={"OVSEG_CACHE_DIR": os.path.join(cls.tmp, "text-cache")})
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            "--user-data-dir=" + os.path.join(cls.tmp, "profile"),
        ):
            opts.add_argument(a)
        try:
            cls.driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=opts)
        except Exception:
            cls.server.stop()
            raise
        cls.driver.set_page_load_timeout(60)
        cls.driver.set_script_timeout(20)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.driver.quit()
        finally:
            cls.server.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def wait(self, cond, timeout=60):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda d: cond(d))

    def legend(self):
        from selenium.webdriver.common.by import By

        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, "#legend li .name")]

    def status(self):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, "status").text

    def test_upload_classify_and_reclassify(self):
        from selenium.webdriver.common.by import By

        d = self.driver
        d.get(self.server.url + "/")
        self.wait(lambda d: d.find_element(By.ID, "segment").is_enabled())
        self.assertIn("ovseg-demo", d.find_element(By.ID, "model").text)
        d.find_element(By.ID, "file").send_keys(os.path.abspath(IMAGE))
        classes = d.find_element(By.ID, "classes")
        classes.send_keys("sky, grass, red star, dotted blue star, brick wall")
        d.find_element(By.ID, "segment").click()
        # (This image may already be analyzed by the other test: then it says "from the cached analysis".)
        self.wait(lambda d: self.legend() and self.status().endswith(" ms"))
        first = self.legend()
        self.assertTrue(set(first) <= {"sky", "grass", "red star", "dotted blue star", "brick wall"}, first)
        self.assertIn("dotted blue star", first)  # the example's never-trained composition
        # The label map it offers is the CLI's, byte for byte.
        out = os.path.join(self.tmp, "cli")
        p = subprocess.run(
            [
                BIN,
                "-q",
                "segment",
                "-m",
                DEMO,
                "-c",
                "sky, grass, red star, dotted blue star, brick wall",
                "-o",
                out,
                IMAGE,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, OVSEG_CACHE_DIR=os.path.join(self.tmp, "text-cache")),
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        href = d.find_element(By.ID, "dl-labels").get_attribute("href")
        page_png = d.execute_async_script(
            "const done = arguments[1]; fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {"
            " let s = ''; const u = new Uint8Array(b);"
            " for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);"
            " done(btoa(s)); });",
            href,
        )
        with open(os.path.join(out, "heldout_2026_00001.png"), "rb") as f:
            self.assertEqual(base64.b64decode(page_png), f.read())
        # Hovering names a class and its score.
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(d).move_to_element(d.find_element(By.ID, "layer")).perform()
        tip = self.wait(lambda d: d.find_element(By.ID, "tip").text)
        self.assertRegex(tip, r"^(.+ · [01]\.\d\d|unlabeled)$")

        # Another class list: re-classified from the cached analysis, no new upload.
        classes.clear()
        classes.send_keys("sky, red circle")
        self.wait(lambda d: "cached analysis" in self.status() and set(self.legend()) <= {"sky", "red circle"})
        second = self.legend()
        self.assertTrue(second)
        self.assertNotEqual(first, second)
        shot = os.path.join(os.environ.get("OVSEG_BINARY_DIR", self.tmp), "serve_page.png")
        d.save_screenshot(shot)
        # Opacity slider changes the layer, not the request.
        d.execute_script(
            "const o = document.getElementById('opacity'); o.value = 0.2;" "o.dispatchEvent(new Event('input'));"
        )
        self.assertEqual(d.find_element(By.ID, "layer").value_of_css_property("opacity"), "0.2")

    def test_dataset_list_and_an_error(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        d = self.driver
        d.get(self.server.url + "/")
        self.wait(lambda d: d.find_element(By.ID, "segment").is_enabled())
        d.find_element(By.ID, "file").send_keys(os.path.abspath(IMAGE))
        d.find_element(By.ID, "classes").send_keys("sky,,grass")
        d.find_element(By.ID, "segment").click()
        self.wait(lambda d: "empty class name" in self.status())
        self.assertIn("error", d.find_element(By.ID, "status").get_attribute("class"))
        Select(d.find_element(By.ID, "dataset")).select_by_value("voc20")
        d.find_element(By.ID, "segment").click()
        self.wait(lambda d: self.status().endswith(" ms"))
        self.assertIn("of 20 classes", d.find_element(By.ID, "legend-title").text)


if __name__ == "__main__":
    unittest.main()
