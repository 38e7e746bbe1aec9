"""The Dagster UI as a person sees it: `dagster-webserver` on loopback, Debian's chromium headless.

Both run in their own process group and are killed as a group on the way out, failure or not.
Chromium is driven by Selenium through Debian's chromedriver: nothing is downloaded (the network
is closed; Selenium Manager never runs because both binaries are given).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without these headless chromium stalls on a closed network (updates, sync, QUIC probes).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Wide enough that the fitted lineage graph shows full asset nodes (check status, partitions).
WINDOW = "--window-size=1920,1080"
WAIT_SECONDS = 60
# SVG elements in an HTML page: XPath matches them by local name only.
GRAPH = "//*[local-name()='svg' and contains(@class,'svgContainer')]"
NODE = f"{GRAPH}//*[local-name()='foreignObject']"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Webserver:
    proc: subprocess.Popen
    url: str
    log: Path

    def wait_answering(self) -> str:
        """Until it answers HTTP (the code location may still be loading: the UI waits for it)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                opener.open(f"{self.url}/server_info", timeout=2).close()
                return self.url
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(
            f"dagster-webserver did not answer on {self.url} (exit "
            f"{self.proc.poll()}): {self.log.read_text(errors='replace')[-3000:]}"
        )


def _create_storage(home: Path) -> None:
    """The instance's SQLite databases, created here rather than by the webserver and the
    caller's first run at the same moment."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs_count()
        instance.get_latest_materialization_event(dg.AssetKey("none"))
        instance.all_instigator_state()


@contextlib.contextmanager
def dagster_webserver(home: Path, workspace: Path, log: Path) -> Iterator[Webserver]:
    """`dagster-webserver` (and the code server it starts) for instance `home`, started and left
    to boot while the caller goes on. The "join the community" dialog that the UI shows on
    loopback is marked as seen."""
    (home / ".nux").mkdir(parents=True, exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    _create_storage(home)
    port = _free_port()
    binary = Path(sys.executable).parent / "dagster-webserver"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)],
            cwd=workspace.parent,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield Webserver(proc, f"http://127.0.0.1:{port}", log)
    finally:
        _kill_group(proc)


@contextlib.contextmanager
def chromium(failure_shot: Path) -> Iterator[webdriver.Chrome]:
    """Headless chromium in a fresh profile; on a failure the page is saved to `failure_shot`
    (and its HTML beside it) to see what the browser showed."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"{binary} is missing: `make install` installs Debian's chromium "
                "and chromium-driver"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="busflow-chromium-") as profile:
        for flag in [*CHROMIUM_FLAGS, WINDOW, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        except BaseException:
            with contextlib.suppress(Exception):
                driver.save_screenshot(str(failure_shot))
                failure_shot.with_suffix(".html").write_text(driver.page_source)
            raise
        finally:
            with contextlib.suppress(Exception):
                driver.quit()
            _kill_group(service.process)  # chromedriver and every chromium it started


@dataclass(frozen=True)
class Node:
    name: str
    checks: str  # the node's check status, e.g. "1 / 1 Passed"
    x: float
    y: float
    width: float
    height: float


class DagsterUI:
    """What a person does in the UI, with explicit waits (no sleeps)."""

    def __init__(self, driver: webdriver.Chrome, url: str):
        self.driver, self.url = driver, url
        self.wait = WebDriverWait(driver, WAIT_SECONDS)

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def visible_text(self, text: str):
        return self.wait.until(
            EC.visibility_of_element_located((By.XPATH, f"//*[normalize-space(text())='{text}']"))
        )

    def lineage(self, group: str, location: str, names: list[str]) -> tuple[list[Node], set]:
        """Opens the group's lineage graph and waits until `names` are drawn as full nodes with
        their live data loaded (the check status links to the Checks tab); returns the nodes and
        the edges as (upstream, downstream).

        An edge is an SVG path drawn from the right side of one node to the arrow head at the
        left side of another; the UI puts no names on edges, so they are read from geometry.
        """
        self.open(f"/locations/__repository__@{location}/asset-groups/{group}")
        loaded = (
            f"{NODE}[.//a[contains(@href,'view=checks')]][not(.//*[starts-with(text(),'Loading')])]"
        )
        self.wait.until(lambda d: len(d.find_elements(By.XPATH, loaded)) == len(names))
        self._wait_still()
        nodes = [self._node(fo) for fo in self.driver.find_elements(By.XPATH, NODE)]
        paths = [
            p.get_attribute("d")
            for p in self.driver.find_elements(
                By.CSS_SELECTOR, "svg[class*='svgContainer'] path[marker-end]"
            )
        ]
        return nodes, {_edge(d, nodes) for d in paths}

    def _wait_still(self) -> None:
        """Until the graph's fit-to-view transform stops changing (it animates)."""
        seen: list[str] = []

        def still(driver) -> bool:
            seen.append(driver.find_element(By.XPATH, f"{GRAPH}/..").get_attribute("style"))
            return len(seen) > 2 and seen[-1] == seen[-2] == seen[-3]

        WebDriverWait(self.driver, WAIT_SECONDS, poll_frequency=0.2).until(still)

    @staticmethod
    def _node(fo) -> Node:
        name = fo.find_element(By.CSS_SELECTOR, "[class*='AssetNode_assetName']").text.strip()
        checks = fo.find_element(By.CSS_SELECTOR, "a[href*='view=checks']").text.strip()
        x, y, w, h = (float(fo.get_attribute(a)) for a in ("x", "y", "width", "height"))
        return Node(name, checks, x, y, w, h)

    def checks_listed(self, asset: str) -> list[str]:
        """The asset page's Checks tab: the checks listed on the left (full names: the list
        truncates them in the middle and keeps the whole name as the title), once the first
        check's detail has loaded."""
        self.open(f"/assets/{asset}?view=checks")
        self.wait.until(
            EC.visibility_of_element_located(
                (By.XPATH, "//div[@aria-label='asset_check']/following-sibling::span")
            )
        )
        items = self.driver.find_elements(
            By.XPATH,
            "//div[contains(@class,'AssetChecks_checkRow')]"
            "//div[contains(@class,'MiddleTruncate_container') and @title]",
        )
        return [item.get_attribute("title") for item in items if item.is_displayed()]

    def check_partition(self, asset: str, check: str, partition: str):
        """Asset page -> Checks tab -> the check -> Partitions -> filter -> the partition.
        Returns the detail pane's header element (the partition and its status tag)."""
        self.open(f"/assets/{asset}?view=checks")
        self.visible_text(check)
        self.wait.until(
            EC.element_to_be_clickable(
                (By.XPATH, "//button[@role='tab' and normalize-space()='Partitions']")
            )
        ).click()
        search = self.wait.until(
            EC.visibility_of_element_located(
                (By.XPATH, "//input[starts-with(@placeholder,'Filter by partition')]")
            )
        )
        search.send_keys(partition)
        self.wait.until(
            EC.element_to_be_clickable((By.XPATH, f"//span[normalize-space(text())='{partition}']"))
        ).click()
        return self.wait.until(
            EC.visibility_of_element_located(
                (By.XPATH, (f"//span[div[@title='{partition}']]/parent::div[.//*[@data-tooltip]]"))
            )
        )

    def plots(self, asset: str, keys: list[str]) -> None:
        """The asset's Overview -> Metadata -> *Plots* (by partition), scrolled into view once a
        chart titled by each metadata key in `keys` is drawn."""
        self.open(f"/assets/{asset}?view=overview")
        button = self.wait.until(
            EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Plots']"))
        )
        button.click()
        for key in keys:
            self.visible_text(key)
        self.wait.until(lambda d: len(d.find_elements(By.TAG_NAME, "canvas")) >= len(keys))
        self.driver.execute_script("arguments[0].scrollIntoView()", button)

    def metadata_table(self, asset: str, partition: str, entry: str) -> tuple[list, list]:
        """A partition's materialization metadata entry rendered as a table: header, rows."""
        self.open(f"/assets/{asset}?view=partitions&partition={partition}")
        table = self.wait.until(
            EC.visibility_of_element_located(
                (By.XPATH, (f"//tr[td//span[normalize-space(text())='{entry}']]//table"))
            )
        )
        header = [th.text for th in table.find_elements(By.XPATH, ".//thead//th")]
        rows = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in table.find_elements(By.XPATH, ".//tbody/tr")
        ]
        return header, rows


def _edge(d: str, nodes: list[Node]) -> tuple[str, str]:
    """(upstream, downstream) of a path `M x1,y1 C ... x2,y2`: it leaves its upstream node's
    right side and ends a few pixels left of its downstream node (where the arrow head sits)."""
    points = [tuple(map(float, p)) for p in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]
    (x1, y1), (x2, y2) = points[0], points[-1]
    [up] = [n for n in nodes if abs(n.x + n.width - x1) < 1 and n.y <= y1 <= n.y + n.height]
    [down] = [n for n in nodes if 0 <= n.x - x2 <= 12 and n.y <= y2 <= n.y + n.height]
    return up.name, down.name
