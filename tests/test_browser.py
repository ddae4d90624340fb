"""The your-own-classifier notebook as a learner meets it: JupyterLab in headless Chromium, Run All, then
use each widget with the mouse and the file chooser.

JupyterLab runs from this Python's environment on 127.0.0.1 with a token, on a copy of the notebook (so
that nothing is saved over the committed one), with its settings in a temporary folder. Screenshots go to
``build/browser/``. Every server, kernel and browser the test starts is stopped, also when it fails.
Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skips without them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cbr_lite.widgets import FALLBACK_TEXT

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = ROOT / "build" / "browser"
NOTEBOOK = next(iter(sorted((ROOT / "notebooks").glob("[0-9][0-9]_your_own_classifier.ipynb"))), None)
# The network is closed here and on CI: no sandbox (root), no GPU, nothing that phones home.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]
RUN_ALL_TIMEOUT = 300  # seconds; the notebook runs in about 25 s on an idle 2-core machine

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    """Why this machine cannot run the test, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if _chromium() is None or shutil.which("chromedriver") is None:
        return "no Chromium and chromedriver (Debian/Ubuntu: apt-get install chromium chromium-driver)"
    if NOTEBOOK is None:
        return "no notebooks/NN_your_own_classifier.ipynb"
    return None


def _copy_for_this_python(notebook: Path, copy: Path) -> None:
    """Copy ``notebook``, stamped with this Python's version as its kernel will report it.

    On opening, JupyterLab writes the kernel's ``language_info`` into the notebook's metadata, so a notebook
    saved by Python 3.11 opens *modified* under 3.10 (harmless: only the stamp changes). The test checks that
    nothing else modifies it, on every Python.
    """
    content = json.loads(notebook.read_text(encoding="utf-8"))
    content["metadata"].setdefault("language_info", {})["version"] = platform.python_version()
    copy.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``(base URL, token)`` of a JupyterLab serving a copy of the notebook; stopped afterwards."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("lab")
    served = home / "notebooks"
    served.mkdir()
    _copy_for_this_python(NOTEBOOK, served / NOTEBOOK.name)
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab"
    _write_json(settings / "notebook-extension" / "tracker.jupyterlab-settings", {"windowingMode": "none"})
    _write_json(settings / "apputils-extension" / "notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})
    token = secrets.token_hex(16)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                       JUPYTER_RUNTIME_DIR=str(home / "runtime"), PYTHONPATH=_python_path())
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={served}", "--LabApp.news_url=None",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
        env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(server, base, token, home / "server.log")
        yield base, token
    finally:
        _stop_server(server, base, token)
        log.close()
        shutil.copy(home / "server.log", _artefact("server.log"))


@pytest.fixture(scope="module")
def browser(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"cbr-lite-chromium-{secrets.token_hex(4)}"
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    try:
        driver.set_window_size(1400, 1000)
        yield driver
    finally:
        try:
            _artefact("page.html").write_text(driver.page_source)
            _console(driver)
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


def test_the_notebook_runs_and_every_widget_works_in_jupyterlab(lab, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, token = lab
    timings = {}
    started = time.monotonic()
    browser.get(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"))
    wait.until(lambda d: "Idle" in _text(d, "#jp-main-statusbar"))  # the kernel has started
    timings["open"] = time.monotonic() - started
    browser.save_screenshot(_artefact("01_opened.png"))
    # Before anything runs, the widget cells show text (no kernel has the widgets yet), never a widget
    # that waits for ever or an error.
    time.sleep(2)
    page = browser.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
    for text in ["Loading widget", "Error displaying widget"]:
        assert text not in page, f"on opening, the notebook shows {text!r}"
    _check_console(browser, "after opening the notebook")
    tab = browser.find_element(By.CSS_SELECTOR, ".jp-mod-current.lm-TabBar-tab")
    assert "jp-mod-dirty" not in tab.get_attribute("class"), "the notebook opens already modified"

    # Run All, from the menu as a learner does.
    started = time.monotonic()
    _click_menu(browser, "Run", "Run All Cells")
    code_cells = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")
    # The saved notebook shows counts already; Run All first queues every cell ("[*]:").
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: _prompts(d)[-1] == "[*]:")
    try:
        WebDriverWait(browser, RUN_ALL_TIMEOUT, poll_frequency=1).until(lambda d: _all_ran(d, len(code_cells)))
    except TimeoutException:
        browser.save_screenshot(_artefact("error.png"))
        raise AssertionError(f"Run All did not finish within {RUN_ALL_TIMEOUT} s; prompts: {_prompts(browser)}") from None
    WebDriverWait(browser, 60, poll_frequency=0.5).until(lambda d: "Idle" in _text(d, "#jp-main-statusbar"))
    timings["run all"] = time.monotonic() - started
    browser.save_screenshot(_artefact("02_after_run_all.png"))

    # Every widget is drawn as controls, not as text.
    page = browser.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
    for text in ["Error displaying widget", "VBox(children=", FALLBACK_TEXT.split("{name}")[1]]:
        assert text not in page, f"the page shows {text!r}"
    tools = _tools(browser)
    assert len(tools) == 3, f"expected the album builder, the panel and the threshold explorer, found {len(tools)}"
    albums, panel, explorer = tools
    for tool in tools:
        assert tool.find_elements(By.CSS_SELECTOR, "input, button, select, .noUi-handle"), "a widget without controls"
    for name, tool in zip(["albums", "panel", "explorer"], tools):
        _scroll_to(browser, tool)
        tool.screenshot(str(_artefact(f"03_{name}.png")))

    # Images are drawn at their own proportions (an HBox used to stretch them to the table's height).
    for tool in (panel, explorer):
        for image in tool.find_elements(By.CSS_SELECTOR, "img"):
            natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
            shown = [image.size["width"], image.size["height"]]
            if natural[0] and shown[0]:
                assert abs(shown[0] / shown[1] - natural[0] / natural[1]) < 0.02, f"image {natural} drawn {shown}"
            # ... and fit in the notebook's width (they go below the table where it is narrow).
            assert browser.execute_script(
                "const box = arguments[0].closest('.jp-OutputArea-output').getBoundingClientRect();"
                "return arguments[0].getBoundingClientRect().right <= box.right + 1", image), "an image is cut off"
    # Button labels are not cut off.
    for button in browser.find_elements(By.CSS_SELECTOR, ".widget-upload"):
        assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", button), \
            f"the label of {button.text!r} is cut"

    # Moving the threshold slider changes the summary line.
    started = time.monotonic()
    summary = _summary(explorer)
    handle = explorer.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    _scroll_to(browser, handle)
    ActionChains(browser).click_and_hold(handle).move_by_offset(-120, 0).release().perform()
    WebDriverWait(browser, 60, poll_frequency=0.5).until(lambda d: _summary(explorer) != summary)
    assert re.match(r"threshold \d\.\d{3}: \d+ of \d+ queries answered 'unknown'", _summary(explorer))
    assert _summary(explorer).split(":")[0] != summary.split(":")[0], "the threshold itself did not change"
    explorer.screenshot(str(_artefact("04_explorer_after_slider.png")))
    timings["slider"] = time.monotonic() - started

    # Choosing an example, then uploading an image through the panel's upload control, shows the upload's
    # best class, and the example dropdown no longer names the example.
    started = time.monotonic()
    _scroll_to(browser, panel)
    pictures = _pictures(panel)
    example = Select(panel.find_element(By.CSS_SELECTOR, "select"))
    example.select_by_index(1)
    WebDriverWait(browser, 60, poll_frequency=0.5).until(lambda d: _pictures(panel) != pictures)
    classes = sorted(path.name for path in (ROOT / "data" / "albums").iterdir() if path.is_dir())
    image = sorted((ROOT / "data" / "albums" / classes[0]).iterdir())[-1]
    pictures = _pictures(panel)
    _choose_file(browser, panel, image)
    # The kernel answers with the thumbnail, the chart, the result line and the dropdown, in that order.
    WebDriverWait(browser, 60, poll_frequency=0.5).until(
        lambda d: _pictures(panel) != pictures and example.first_selected_option.text == "(choose)",
        message="no new image and chart, or the dropdown still names the example")
    best = re.search(r"best class: (\S+) \(score", panel.text)
    assert best and best.group(1) in classes, panel.text
    panel.screenshot(str(_artefact("05_panel_after_upload.png")))
    timings["example and upload"] = time.monotonic() - started

    # The album builder still works after Run All (the notebook's clean-up must not have taken its folder)
    # and keeps the classes it has.
    rows_before = len(albums.find_elements(By.CSS_SELECTOR, "table tr"))
    name_box = albums.find_element(By.CSS_SELECTOR, ".widget-text input")
    name_box.send_keys(Keys.CONTROL, "a")  # replace the name the notebook typed in code
    name_box.send_keys("added in the browser")
    _choose_file(browser, albums, image)
    WebDriverWait(browser, 60, poll_frequency=0.5).until(lambda d: "added 1 image(s)" in albums.text
                                                         or "deleted" in albums.text)
    assert "added 1 image(s) to 'added in the browser'" in albums.text, albums.text
    assert len(albums.find_elements(By.CSS_SELECTOR, "table tr")) == rows_before + 1
    _scroll_to(browser, albums)
    albums.screenshot(str(_artefact("06_albums_after_upload.png")))

    _artefact("timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1))
    _check_console(browser, "after using the widgets")


# Helpers -----------------------------------------------------------------------------------------------


_CONSOLE: list = []


def _console(driver) -> list:
    """Every browser console message so far (the driver hands each out once), also in console.txt."""
    _CONSOLE.extend(f"{entry['level']} {entry['message']}" for entry in driver.get_log("browser"))
    _artefact("console.txt").write_text("".join(line + "\n" for line in _CONSOLE))
    return list(_CONSOLE)


def _tools(driver) -> list:
    """The widget tools drawn in the notebook's outputs (each is one VBox)."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output > .jupyter-widgets.widget-vbox")


def _check_console(driver, when: str) -> None:
    problems = [message for message in _console(driver) if "model not found" in message.lower()]
    assert not problems, f"{when}, the browser console says: {problems[0][:1000]}"


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _artefact(name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS / name


def _python_path() -> str:
    """The kernel imports this checkout's cbr_lite, as the tests do."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _wait_for_server(server, base: str, token: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop_server(server, base: str, token: str) -> None:
    """Shut the kernels down through the API (they run in sessions of their own), then the server."""
    try:
        with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10) as response:
            kernels = json.load(response)
        for kernel in kernels:
            request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()
    except OSError:
        pass  # the server is already gone; its kernels exit when their parent does (JPY_PARENT_PID)
    for sig, grace in [(signal.SIGTERM, 20), (signal.SIGKILL, 10)]:
        if server.poll() is not None:
            return
        os.killpg(server.pid, sig)
        try:
            server.wait(grace)
        except subprocess.TimeoutExpired:
            continue


def _text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(element.text for element in driver.find_elements(By.CSS_SELECTOR, selector))


def _click_menu(driver, menu: str, item: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for label in driver.find_elements(By.CSS_SELECTOR, "#jp-MainMenu .lm-MenuBar-itemLabel"):
        if label.text == menu:
            label.click()
            break
    else:
        raise AssertionError(f"no {menu!r} menu")
    entry = WebDriverWait(driver, 10).until(lambda d: next(
        (e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu .lm-Menu-itemLabel") if e.text == item), None))
    entry.click()


def _all_ran(driver, cells: int) -> bool:
    """True once every code cell shows an execution count; fails at once on an error or stderr output."""
    from selenium.webdriver.common.by import By

    errors = driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    if errors:
        driver.save_screenshot(str(_artefact("error.png")))
        raise AssertionError(f"a cell wrote to stderr or failed:\n{errors[0].text[:2000]}")
    # Run All runs the cells in order and stops at an error: once the last one has its count, all ran.
    # (Cells whose code is collapsed, the solutions, show no prompt.)
    prompts = _prompts(driver)
    return (len(prompts) == cells and bool(re.fullmatch(r"\[\d+\]:", prompts[-1]))
            and all(re.fullmatch(r"(\[\d+\]:)?", prompt) for prompt in prompts))


def _prompts(driver) -> list:
    """The code cells' prompts: "[3]:" once run, "[*]:" while running, "[ ]:" before."""
    from selenium.webdriver.common.by import By

    return [p.get_attribute("textContent").strip()
            for p in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]


# ipywidgets' FileUpload clicks a file input that is not in the page, which opens the browser's file
# chooser; a headless browser has none. This puts that input into the page instead, where Selenium chooses
# the file as a person would in the chooser; the widget's own change handler then reads and sends it.
_CATCH_FILE_CHOOSER = """
if (!window.cbrLiteChooser) {
    window.cbrLiteChooser = true;
    const click = HTMLInputElement.prototype.click;
    HTMLInputElement.prototype.click = function () {
        if (this.type !== "file") return click.call(this);
        this.value = "";
        this.setAttribute("data-chooser", "open");
        this.style.display = "block";
        document.body.appendChild(this);
    };
}
"""


def _choose_file(driver, tool, path: Path) -> None:
    """Click the tool's upload button and choose ``path`` in the file chooser it opens."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script(_CATCH_FILE_CHOOSER)
    _scroll_to(driver, tool)
    tool.find_element(By.CSS_SELECTOR, "button.widget-upload").click()
    chooser = WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, 'input[data-chooser="open"]'))
    chooser.send_keys(str(path))
    driver.execute_script("arguments[0].removeAttribute('data-chooser'); arguments[0].remove()", chooser)


def _scroll_to(driver, element) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)


def _summary(explorer) -> str:
    from selenium.webdriver.common.by import By

    return next((e.text for e in explorer.find_elements(By.CSS_SELECTOR, ".widget-html-content")
                 if e.text.startswith("threshold ")), "")


def _pictures(tool) -> list:
    """The sources of a tool's images (ipywidgets gives each new image value a new blob URL)."""
    from selenium.webdriver.common.by import By

    return [image.get_attribute("src") for image in tool.find_elements(By.CSS_SELECTOR, "img")]
