"""The Train view in Debian Chromium driven by Playwright: start a digits training from the page,
watch its curves grow epoch by epoch and its snapshots change, and see the finished run join
the run menu; an explorer with no run yet opens on the Train view.

Playwright never downloads a browser here: it launches /usr/bin/chromium; without it these
tests are skipped.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser  # the `chromium` fixture (conftest.py) skips without /usr/bin/chromium


def open_page(chromium, url: str, fragment: str = ""):
    """A page at ``url`` + ``fragment`` that records script errors and any request leaving the explorer."""
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.errors, page.elsewhere = [], []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on(
        "request",
        lambda r: None if r.url.startswith((url, "data:", "blob:")) else page.elsewhere.append(r.url),
    )
    page.goto(url + fragment)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    return page


def wait_until(condition, page, timeout_s: float = 180) -> None:
    """Poll ``condition`` from Python (the page's CSP forbids Playwright's eval-based waits)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(250)


def test_train_view_trains_digits_and_the_run_joins_the_menu(chromium, digits_run, tmp_path):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([digits_run], runs_dir=tmp_path / "runs", max_trainings=1) as url:
        page = open_page(chromium, url, "#train")
        assert page.locator("#tab-train").is_visible()
        page.select_option("#train-data", "digits")
        page.select_option("#train-model", "convnet")
        page.fill("#train-epochs", "4")
        page.click("#train-start")
        page.wait_for_selector('#train-curves[data-run^="digits-convnet"]', timeout=30_000)
        run_id = page.locator("#train-curves").get_attribute("data-run")
        wait_until(lambda: int(page.locator("#train-curves").get_attribute("data-epochs")) >= 3, page)
        losses = page.locator('#train-curves polyline[data-series="train_loss"]')
        assert int(losses.get_attribute("data-points")) >= 3
        page.wait_for_selector("#train-curves[data-done=finished]", timeout=180_000)
        assert page.locator("#train-watch").input_value() == run_id
        page.wait_for_selector(f'#run-select option[value="{run_id}"]', state="attached", timeout=20_000)
        # the slider shows the newest epoch's snapshot; epoch 0 is the initialization
        page.wait_for_selector('#train-snapshot[data-epoch="4"]', timeout=20_000)
        assert page.locator("#train-snapshot canvas.kernel").count() == 16  # conv1: 16 kernels of 1×3×3
        assert page.locator("#train-snapshot canvas.train-map").count() == 16
        page.screenshot(path=tmp_path / "train-view.png", full_page=False)
        page.locator("#train-epoch").fill("0")
        page.wait_for_selector('#train-snapshot[data-epoch="0"]', timeout=20_000)
        assert "initial" in page.locator("#train-epoch-value").inner_text()
        page.close()
    assert page.errors == [], page.errors
    assert page.elsewhere == [], page.elsewhere


def test_explorer_without_runs_opens_on_the_train_view(chromium, tmp_path):
    from convlens.server.background import BackgroundServer

    with BackgroundServer([], runs_dir=tmp_path / "runs") as url:
        page = open_page(chromium, url)
        assert page.locator("#tab-train").is_visible()
        assert page.locator("#run-select option").count() == 0
        assert "runs" in page.locator("#train-where").inner_text()
        assert page.locator("#train-data option").count() >= 1
        # a refused request says which field is wrong in the request's own words, not a CLI flag
        page.fill("#train-epochs", "0")
        page.click("#train-start")
        page.wait_for_selector("#train-status.error", timeout=20_000)
        said = page.locator("#train-status").inner_text()
        assert said.startswith("epochs must be a whole number 1..100, got 0") and "--" not in said
        page.close()
    assert all("status of 400" in error for error in page.errors), page.errors  # the refused POST


def test_a_shared_link_to_a_view_that_needs_no_run_opens_it_without_runs(chromium, tmp_path):
    """A teacher's playground link works on an explorer with an empty runs folder; a link to a view
    that explains a run still opens Train there."""
    from convlens.server.background import BackgroundServer

    with BackgroundServer([], runs_dir=tmp_path / "runs") as url:
        page = open_page(chromium, url, "?pg-dataset=xor#playground2d")
        assert page.locator("#tab-playground2d").is_visible()
        assert not page.locator("#tab-train").is_visible()
        page.close()
        page = open_page(chromium, url, "#attribution")
        assert page.locator("#tab-train").is_visible()
        page.close()
    assert page.errors == [], page.errors


@pytest.mark.slow  # a 100-epoch schedule (early stopping ends it sooner), so a stop lands early
def test_a_training_stopped_from_the_page_is_watchable_after_a_reload_and_resumes(chromium, tmp_path):
    """Issue 23, defect 4: a stopped training said "(resumable)" with no way to resume, and a
    reload dropped it from the watch menu."""
    import httpx

    from convlens.server.background import BackgroundServer

    with BackgroundServer([], runs_dir=tmp_path / "runs", max_trainings=1) as url:
        page = open_page(chromium, url, "#train")
        page.select_option("#train-data", "digits")
        page.select_option("#train-model", "convnet")
        page.fill("#train-epochs", "100")  # long enough that the stop lands after epoch 1 or 2
        page.click("#train-start")
        page.wait_for_selector('#train-curves[data-run^="digits-convnet"]', timeout=30_000)
        run_id = page.locator("#train-curves").get_attribute("data-run")
        wait_until(lambda: int(page.locator("#train-curves").get_attribute("data-epochs")) >= 1, page)
        page.click("#train-stop")
        page.wait_for_selector("#train-curves[data-done=stopped]", timeout=60_000)
        page.wait_for_selector("#train-resume-box", state="visible", timeout=20_000)  # Resume at once
        stopped_at = httpx.get(url + "api/train").json()["stopped"][0]
        assert stopped_at["id"] == run_id and 1 <= stopped_at["epoch"] < 100

        page.reload()
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        option = page.locator(f'#train-watch option[value="{run_id}"]')
        wait_until(lambda: option.count() == 1, page, timeout_s=30)
        assert option.inner_text() == f"{run_id} (stopped at epoch {stopped_at['epoch']} of 100)"
        page.select_option("#train-watch", run_id)
        page.wait_for_selector("#train-curves[data-done=stopped]", timeout=30_000)
        epochs = int(page.locator("#train-curves").get_attribute("data-epochs"))
        assert epochs == stopped_at["epoch"]  # its curves so far ...
        assert (
            page.locator("#train-last").inner_text().startswith(f"epoch {epochs} of 100 (where it stopped)")
        )
        page.wait_for_selector(f'#train-snapshot[data-epoch="{epochs}"]', timeout=20_000)  # ... and snapshots
        said = page.locator("#train-stopped-text").inner_text()
        assert f"stopped at epoch {epochs} of 100" in said and "exactly where it stopped" in said
        command = page.locator("#train-resume-command").inner_text()
        assert command == f"convlens train --data digits --out {tmp_path / 'runs' / run_id} --resume"
        assert page.locator(f'#run-select option[value="{run_id}"]').count() == 0  # not a run yet

        page.click("#train-resume")
        page.wait_for_selector("#train-resume-box", state="hidden", timeout=20_000)
        page.wait_for_selector("#train-curves[data-done=finished]", timeout=300_000)
        done = int(page.locator("#train-curves").get_attribute("data-epochs"))
        assert epochs < done <= 100  # on from where it stopped (early stopping may end it sooner)
        assert f"finished after {done} epochs" in page.locator("#train-status").inner_text()
        page.wait_for_selector(f'#run-select option[value="{run_id}"]', state="attached", timeout=20_000)
        watched = page.locator(f'#train-watch option[value="{run_id}"]')
        wait_until(lambda: watched.inner_text() == run_id, page, timeout_s=20)  # no longer "(training)"
        page.close()
    assert page.errors == [], page.errors
    assert page.elsewhere == [], page.elsewhere
