"""The app in a real browser: Debian's Chromium, driven by Playwright, logs in through the app's login form,
casts blind votes with the keyboard, sees the leaderboard change, and marks a flagged release candidate.

Playwright's own browser download does not work here, so this drives `/usr/bin/chromium` (Debian's package;
`.ci/run` installs it). Without Chromium or playwright the test is skipped on a workstation and fails under
CI (`CI` set), so CI cannot pass without running it.

With `EVALSVC_SCREENSHOTS=<folder>` it also saves full-page screenshots of the vote page (a pair, then the
reveal) and of every main-page tab, for a person to look at.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from conftest import APP_USERS, second_base_and_suite, serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # one Gradio event on two busy cores can take seconds; a broken page still fails in a minute
VOTES = ("A", "B", "A", "B", "B", "A")  # decisive answers only: each moves two checkpoints' ratings
KEYS = {"A": ("1", "a"), "B": ("2", "b")}  # one key per vote: digits and letters in turn
REVEAL = re.compile(r"Your last vote: (A|B)\. A was (\S+), B was (\S+)\.")
WITHOUT_REVEAL = """() => { const page = document.body.cloneNode(true);
  page.querySelectorAll('.evs-reveal').forEach(e => e.remove()); return page.innerHTML.toLowerCase(); }"""


@pytest.fixture(scope="session")
def browser_available():
    """Checks for Playwright and Debian's Chromium before the (slow) demo store is built: skips where either is
    missing, except under CI (`CI` set), where that fails."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "a browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run it")
        pytest.skip(message)


@pytest.fixture
def chromium(browser_available):
    """A headless Debian Chromium under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _screenshots() -> Path | None:
    folder = os.environ.get("EVALSVC_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _shoot(page, folder: Path | None, name: str) -> None:
    if folder is not None:
        page.screenshot(path=folder / f"{name}.png", full_page=True)


def _logged_in_page(browser, url: str, user: str, ready):
    """A page of its own browser context (own cookies) at `url`, logged in through the app's login form (shown,
    with 401, wherever a page is asked for without a session); returns once `ready(page)` (a locator) shows."""
    page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(APP_USERS[user])
    page.get_by_role("button", name="Login").click()
    ready(page).wait_for()
    return page


def _tab_labels(page) -> list[str]:
    """The main page's tab labels in order, including any Gradio moved into its "More tabs" menu."""
    page.get_by_role("tab").first.wait_for()
    shown = [t.strip() for t in page.get_by_role("tab").all_text_contents()]
    hidden = [t.strip() for t in page.locator(".overflow-dropdown button").all_text_contents()]
    return shown + [t for t in hidden if t not in shown]


def _open_tab(page, label: str) -> None:
    tab = page.get_by_role("tab", name=label, exact=True)
    if tab.count():
        tab.click()
        page.locator("[role=tab][aria-selected=true]", has_text=label).wait_for()
    else:  # overflowed into the menu
        page.get_by_role("button", name="More tabs").click()
        page.locator(".overflow-dropdown button", has_text=label).click()


def _ratings(page) -> list[list[str]]:
    """The rows of the leaderboard's ratings table as shown: [rank, checkpoint, rating, 95% CI, votes]."""
    grid = page.get_by_role("grid").filter(has=page.get_by_role("columnheader", name="rating", exact=True))
    return grid.evaluate("""g => {
        const rows = {};
        for (const cell of g.querySelectorAll('[role=gridcell][data-row]')) {
            (rows[cell.dataset.row] ??= [])[Number(cell.dataset.col)] = cell.innerText.trim();
        }
        return Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
    }""")


def _refreshed_ratings(page, done, what: str) -> list[list[str]]:
    """Clicks Refresh on the Leaderboard tab and polls the ratings table until `done(rows)`."""
    page.get_by_role("button", name="Refresh", exact=True).click()
    deadline, rows = time.monotonic() + TIMEOUT_MS / 1000, []
    while time.monotonic() < deadline:
        rows = _ratings(page)
        if rows and done(rows):
            return rows
        page.wait_for_timeout(250)
    raise AssertionError(f"the leaderboard never showed {what}; last seen: {rows}")


def _both_images_loaded(page) -> None:
    page.wait_for_function("""() => {
        const images = [...document.querySelectorAll('img[alt=A], img[alt=B]')];
        return images.length === 2 && images.every(i => i.complete && i.naturalWidth > 0);
    }""", timeout=TIMEOUT_MS)


def test_voting_in_chromium_changes_the_leaderboard(browser_available, chromium, short_demo, copy_store):
    from evalsvc.store import open_store

    shots = _screenshots()
    with open_store(copy_store(short_demo[0])) as store:
        db = store.db.cursor()
        try:
            candidates = {name for name, in db.execute(
                "SELECT c.file_name FROM run_checkpoints rc JOIN checkpoints c ON c.sha256 = rc.sha256 "
                "WHERE rc.run = 'purple' AND rc.role = 'candidate'").fetchall()}
            identifying = {text.lower() for name, sha in db.execute("SELECT file_name, sha256 FROM checkpoints")
                           .fetchall() for text in (name, Path(name).stem, sha[:10])}
        finally:
            db.close()
        assert len(candidates) == 4

        with serve_app(store, APP_USERS) as url:
            # Before any vote: no ranking, and the tab says so.
            board = _logged_in_page(chromium, url, "rita", ready=lambda page: page.get_by_role("tab").first)
            _open_tab(board, "Leaderboard")
            board.get_by_text("No votes yet").wait_for()
            assert _ratings(board) == []

            # Blind votes with the keyboard, as ann on the vote page: a pair on arrival, one key per vote.
            voter = _logged_in_page(chromium, url + "vote/", "ann", ready=lambda page: page.locator("img[alt=B]"))
            for label in ("A", "B"):  # large labels above the images
                caption = voter.locator("figcaption", has_text=re.compile(f"^{label}$"))
                assert caption.is_visible() and float(caption.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 30
            assert voter.get_by_text("1 / a").first.is_visible() and voter.get_by_text("4 / x").first.is_visible()
            seen = []
            for i, answer in enumerate(VOTES):
                _both_images_loaded(voter)
                before = voter.locator("img[alt=A]").get_attribute("src")
                leaked = sorted(text for text in identifying if text in voter.evaluate(WITHOUT_REVEAL))
                assert not leaked, f"the vote page names {leaked} before the vote (besides the last reveal)"
                if i == 0:
                    _shoot(voter, shots, "vote-1-pair")
                voter.keyboard.press(KEYS[answer][i % 2])
                voter.wait_for_function("old => { const a = document.querySelector('img[alt=A]');"
                                        " return a !== null && a.getAttribute('src') !== old; }",
                                        arg=before, timeout=TIMEOUT_MS)  # a new pair after the vote
                reveal = voter.locator(".evs-reveal")
                reveal.wait_for()
                voter.wait_for_function("n => document.body.innerText.includes(n + ' vote')", arg=str(i + 1))
                shown = REVEAL.search(reveal.inner_text())
                assert shown and shown[1] == answer, reveal.inner_text()
                assert {shown[2], shown[3]} <= candidates and shown[2] != shown[3]
                seen.append(shown.groups())
                if i == 0:
                    _shoot(voter, shots, "vote-2-reveal")
            assert voter.get_by_text(f"{len(VOTES)} votes so far").is_visible()

            # A second login of hers gets a pair: the first page's pair is abandoned, so she holds one at a time.
            open_pairs = ("SELECT count(*) FROM vote_pairs WHERE voter = 'ann' AND skipped_at IS NULL "
                          "AND token NOT IN (SELECT token FROM votes)")
            other = _logged_in_page(chromium, url + "vote/", "ann", ready=lambda page: page.locator("img[alt=B]"))
            _both_images_loaded(other)
            with store.thread_view() as view:
                assert view.db.execute(open_pairs).fetchone() == (1,)
            voter.keyboard.press("1")  # the abandoned pair's vote is refused and not stored
            voter.get_by_text("skipped").first.wait_for()
            with store.thread_view() as view:
                assert view.db.execute("SELECT count(*) FROM votes").fetchone() == (len(VOTES),)

            # The leaderboard now counts exactly the votes cast, per checkpoint.
            games = {name: 0 for name in candidates}
            margin = {name: 0 for name in candidates}  # wins minus losses
            for answer, left, right in seen:
                winner, loser = (left, right) if answer == "A" else (right, left)
                games[winner] += 1
                games[loser] += 1
                margin[winner] += 1
                margin[loser] -= 1
            after = _refreshed_ratings(board, lambda rows: sum(int(row[4] or 0) for row in rows) == 2 * len(VOTES),
                                       f"the {len(VOTES)} votes cast")
            assert not board.get_by_text("No votes yet").is_visible()
            assert {row[1]: int(row[4]) for row in after} == games
            assert [int(row[0]) for row in after] == [1, 2, 3, 4]
            ratings = [float(row[2]) for row in after]
            assert ratings == sorted(ratings, reverse=True)
            if any(margin.values()):  # someone won more than they lost, so Bradley-Terry cannot rate all equal
                assert len(set(ratings)) > 1, after

            if shots is not None:
                for n, label in enumerate(_tab_labels(board), 1):
                    _open_tab(board, label)
                    board.wait_for_timeout(1000)  # let a tab that loads on select draw itself
                    _shoot(board, shots, f"main-{n}-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}")


@pytest.fixture
def steps_and_bases(tmp_path, sd15_dir, sd15_loras):
    """A store whose run `r` has two kohya LoRA epochs on two SD1.5 bases at 2 and 3 steps, scored with the toy
    CLIP: steps and base are axes with two values each."""
    from evalsvc.cli import main

    other, suite = second_base_and_suite(tmp_path)
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), "--base", str(other),
                 *map(str, sd15_loras[:2])]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(suite), "--seeds", "1,2", "--cfg", "5",
                 "--steps", "2,3", "--sampler", "euler", "--size", "64x64", "--no-progress"]) == 0
    assert main(["score", "--store", str(store), "--run", "r", "--backbone", "toy", "--no-progress"]) == 0
    return store


def _choose(page, label: str, value: str, typed: bool = False) -> None:
    """Pick `value` in the Gradio dropdown labelled `label`, as a person does: open it (with `typed`, type the
    value to narrow the list: a dropdown that takes custom values lists only the options matching its text),
    click the option."""
    box = page.get_by_label(label, exact=True)
    box.click()
    if typed:
        box.fill(value)
    page.locator(f'[role=option][aria-label="{value}"]:visible').click()
    page.locator(f'[role=option][aria-label="{value}"]:visible').wait_for(state="hidden")  # the list closed


def test_the_grid_puts_steps_and_base_on_its_axes_and_curves_show_the_portability_heat_map(
        browser_available, chromium, steps_and_bases):
    from evalsvc.app.server import AppConfig
    from evalsvc.store import open_store

    shots = _screenshots()

    with open_store(steps_and_bases) as store, serve_app(store, APP_USERS, config=AppConfig(run="r")) as url:
        page = _logged_in_page(chromium, url, "rita", ready=lambda page: page.get_by_role("tab").first)
        _open_tab(page, "Grid")
        _choose(page, "rows", "steps")
        _choose(page, "columns", "base")
        _choose(page, "checkpoint filter", "mychar-000002")
        page.get_by_role("button", name="Show grid").click()
        table = page.locator("table.evs-grid")
        # the tab shows page 1 at prompt x checkpoint on arrival: wait for the grid asked for to replace it
        table.locator("th", has_text="steps \\ base").wait_for()
        table.locator("img").first.wait_for()
        header = [t.strip() for t in table.locator("tr").first.locator("th").all_text_contents()]
        rows = [t.strip() for t in table.locator("tr > th:first-child").all_text_contents()][1:]
        assert header == ["steps \\ base", "tiny-sd15", "other-sd15"] and rows == ["2", "3"]
        titles = table.locator("img").evaluate_all("imgs => imgs.map(i => i.title)")
        assert len(titles) == 4 and all("mychar-000002" in t for t in titles)
        for title, (steps, base) in zip(titles, [("2", "tiny-sd15"), ("2", "other-sd15"), ("3", "tiny-sd15"),
                                                  ("3", "other-sd15")]):
            assert f"steps {steps}" in title and f"base {base}" in title  # each image sits in its own row and column
        _shoot(page, shots, "grid-steps-by-base")

        _open_tab(page, "Curves")
        page.get_by_role("button", name="Show curves").click()
        heat = page.locator("table.evs-portability")
        heat.wait_for()
        columns = [t.strip() for t in heat.locator("thead th").all_text_contents()]
        assert columns == ["checkpoint", "base tiny-sd15", "base other-sd15"]
        cells = heat.locator("td.evs-heat")
        assert cells.count() == 2 * 2 + 2  # two LoRAs on both bases, each base on its own
        colours = set(cells.evaluate_all("tds => tds.map(td => getComputedStyle(td).backgroundColor)"))
        assert len(colours) > 1  # a heat map: the cells are shaded by their values
        _shoot(page, shots, "curves-portability")


def test_marking_a_flagged_checkpoint_in_decide_shows_why_and_needs_a_confirmation(
        browser_available, chromium, full_demo, copy_store):
    from evalsvc.store import open_store

    shots = _screenshots()
    with open_store(copy_store(full_demo[0])) as store, serve_app(store, APP_USERS) as url:
        page = _logged_in_page(chromium, url, "ada", ready=lambda page: page.get_by_role("tab").first)
        _open_tab(page, "Decide")
        chosen = page.get_by_label("release candidate (the recommendation first)", exact=True)
        page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => "
                               "i.value.endsWith('.safetensors'))", timeout=TIMEOUT_MS)
        recommended = chosen.input_value()
        with store.thread_view() as view:
            from evalsvc.scoring.results import AnalysisConfig, run_recommendation

            assert recommended == run_recommendation(view, "purple", AnalysisConfig()).checkpoint  # preselected
            overcooked, = view.db.execute(  # the demo's overcooked LoRA (its last epoch), which the report flags
                "SELECT c.file_name FROM run_checkpoints rc JOIN checkpoints c ON c.sha256 = rc.sha256 "
                "WHERE rc.run = 'purple' AND rc.role = 'candidate' AND c.file_name LIKE 'purple-overcooked%'").fetchone()
        page.get_by_text("Evidence").click()
        page.get_by_text("recommended, judged").first.wait_for()  # the evidence, one click away

        page.get_by_role("button", name="Mark as release candidate").click()  # no reason given: a one-line error
        toast = page.get_by_text("say why (the reason is recorded with the decision)")
        toast.wait_for()
        _open_tab(page, "Grid")  # leaving the tab clears its error toasts
        toast.wait_for(state="hidden")
        _open_tab(page, "Decide")

        _choose(page, "release candidate (the recommendation first)", overcooked, typed=True)
        page.get_by_label("why", exact=True).fill("the client wants the stronger look")
        page.get_by_role("button", name="Mark as release candidate").click()
        warning = page.locator("p", has_text="Needs a confirmation")  # the sentence, past its bold start
        warning.wait_for()
        assert "is flagged" in warning.inner_text() and "overcooked" in warning.inner_text()
        with store.thread_view() as view:
            assert view.db.execute("SELECT count(*) FROM decisions").fetchone() == (0,)  # nothing marked yet
        _shoot(page, shots, "decide-confirmation")
        page.get_by_role("button", name="Mark anyway").click()
        page.get_by_text("confirmed despite the warning").wait_for()
        with store.thread_view() as view:
            (name, by, overrides), = view.db.execute(
                "SELECT c.file_name, d.decided_by, d.overrides FROM decisions d JOIN checkpoints c "
                "ON c.sha256 = d.checkpoint").fetchall()
        assert (name, by) == (overcooked, "ada") and "overcooked" in overrides
        assert not page.get_by_role("button", name="Mark anyway").is_visible()
