"""`autoplace dashboard OUT` in a real browser: a tiny search, the dashboard on its storage, headless Chromium.

Chromium and its driver are the Debian packages `chromium` and `chromium-driver` (.ci/run installs them); Selenium
is given both paths, so it never downloads a browser or a driver. Every wait is bounded.
"""
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest

from autoplace.cli import main
from conftest import REPO

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 30  # seconds for any one thing: the server to answer, a page to show what it should

SPACE = """
skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK] <end>"
slots: {min: 1, max: 2}
length: {min: 2, max: 4}
encoder: [none]
lr: {low: 0.001, high: 0.05, log: true}
budget: {steps: 2, eval_every: 1, batch_size: 4, max_length: 32}
reference: {total_length: 4, lr: 0.05, encoder: none, init: vocab}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_dashboard(out, port, log):
    """`autoplace dashboard OUT --port PORT` in a subprocess; its URL once it answers HTTP."""
    proc = subprocess.Popen([sys.executable, "-m", "autoplace.cli", "dashboard", str(out), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + WAIT
    line = ""
    while not line and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
    url = next((w for w in line.split() if w.startswith("http://")), None)
    while url and time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    return proc, None


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a Service path: no Selenium Manager
    driver.set_page_load_timeout(WAIT)
    return driver


def _lines(driver) -> list[str]:
    from selenium.webdriver.common.by import By
    return [" ".join(line.split()) for line in driver.find_element(By.TAG_NAME, "body").text.splitlines()]


def test_dashboard_without_a_study_is_one_line(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no study" in err
    assert not (tmp_path / "study.db").exists()  # looking never creates an empty storage


@pytest.mark.slow
def test_dashboard_shows_the_study_in_chromium(tmp_path, toy_task_file):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        absent = f"Chromium absent ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
        if os.environ.get("CI"):  # .ci/run installs it, so there it must run
            pytest.fail(absent)
        pytest.skip(absent)
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    space, out = tmp_path / "space.yaml", tmp_path / "out"
    space.write_text(SPACE)
    assert main(["search", "--task", str(toy_task_file), "--space", str(space), "--model", "tiny-gpt2",
                 "--n-trials", "3", "--out", str(out)]) == 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{out}/study.db")
    (summary,) = storage.get_all_studies()
    name = summary.study_name
    study_id = storage.get_study_id_from_name(name)
    trials = optuna.load_study(storage=storage, study_name=name).get_trials()
    templates = {t.number: t.user_attrs["template"] for t in trials}
    assert len(trials) == 3 and len(set(templates.values())) == 3

    port, log = _free_port(), open(tmp_path / "dashboard.log", "w")
    proc, url = _start_dashboard(out, port, log)
    driver = None
    try:
        assert url == f"http://127.0.0.1:{port}/dashboard/", \
            f"the dashboard did not serve: {(tmp_path / 'dashboard.log').read_text()}"
        driver = _browser()
        wait = WebDriverWait(driver, WAIT)

        def shows(what, predicate):
            try:
                wait.until(lambda d: predicate(_lines(d)))
            except TimeoutException:
                pytest.fail(f"{driver.current_url} never showed {what}; it shows:\n" + "\n".join(_lines(driver)))

        driver.get(url)  # the study list, with a card linking to the study
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"a[href$='/studies/{study_id}']"))
        assert name in card.text
        card.click()
        wait.until(lambda d: d.current_url.rstrip("/").endswith(f"/studies/{study_id}"))
        shows(f"the study name {name!r}", lambda lines: any(name in line for line in lines))

        driver.get(f"{url}studies/{study_id}/trials")  # the trial list: its count, and one trial's detail at a time
        shows(f"'{len(trials)} Trials'", lambda lines: f"{len(trials)} Trials" in lines)
        for number, template in templates.items():
            driver.find_element(By.XPATH, f"//span[normalize-space(text())='Trial {number}']").click()
            shows(f"trial {number}'s template {template!r}",
                  lambda lines: any(line.startswith(f"Trial {number} (") for line in lines)
                  and f"template {' '.join(template.split())}" in lines)
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        log.close()
