"""The app through HTTP and `gradio_client`: each tab's main action as a reviewer or an admin, the vote page as
a voter, and the image routes."""

from __future__ import annotations

import re

import pytest


def _session(url, user, page=""):
    """An HTTP client logged in as `user` through the login form of `page` ("" or "vote/")."""
    import httpx

    client = httpx.Client(base_url=url)
    assert client.post(page + "login", data={"username": user, "password": f"pw-{user}"}).status_code == 200
    return client


def _client(url, user, page=""):
    from gradio_client import Client

    return Client(url + page, auth=(user, f"pw-{user}"), verbose=False)


def _filters(**pinned) -> list[str]:
    """The grid endpoint's filter arguments, one per axis in order: "(first)" unless pinned."""
    from evalsvc.app.grid import AXES

    return [pinned.get(axis, "(first)") for axis in AXES]


def _same_session(client):
    """An HTTP client on the login session of a `gradio_client` client (vote images are bound to it)."""
    import httpx

    return httpx.Client(base_url=client.src.removesuffix("vote/"), cookies=client.cookies)


def test_grid_tab_shows_a_page_of_store_images(running_app):
    import httpx

    url, _ = running_app
    html = _client(url, "rita").predict("purple", "prompt", "checkpoint", *_filters(), 1, api_name="/grid")
    images = re.findall(r'src="/image/([0-9a-f]{2}/[0-9a-f]{64}\.png)"', html)
    assert "page 1 of 3" in html and len(images) == 6 * 3  # 6 prompts per page x (base, epoch 1, epoch 2)
    response = _session(url, "rita").get("image/" + images[0])
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert httpx.get(url + "image/" + images[0]).status_code == 401  # no session, no image
    assert _session(url, "ann").get("image/" + images[0]).status_code == 403  # a voter's session, no grid image


def test_vote_tab_issues_a_pair_records_one_vote_and_reveals(running_app):
    url, store = running_app
    ann = _client(url, "ann", "vote/")
    token, prompt, pair, _, count = ann.predict(api_name="/next_pair")
    assert prompt.startswith("**Prompt:**") and pair.count("/vote-image/") == 2 and count == "**0** votes so far"
    assert ">A</figcaption>" in pair and ">B</figcaption>" in pair
    session = _same_session(ann)
    left_url = re.search(r'src="/(vote-image/[^"]+)"', pair).group(1)
    image = session.get(left_url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert not any(chunk in image.content for chunk in (b"tEXt", b"iTXt", b"zTXt", b"parameters", b"eXIf"))
    assert _session(url, "ann", "vote/").get(left_url).status_code == 404  # bound to the session it was issued to
    reveal = ann.predict(token, "A", api_name="/vote")
    assert session.get(left_url).status_code == 404  # an answered pair's images are gone
    assert re.search(r"A was <b>purple-(ema-)?00000\d\.safetensors</b>", reveal)
    with pytest.raises(Exception, match="already been answered"):
        ann.predict(token, "B", api_name="/vote")
    with pytest.raises(Exception, match="another voter"):
        token2, *_ = ann.predict(api_name="/next_pair")
        _client(url, "bob", "vote/").predict(token2, "A", api_name="/vote")
    db = store.db.cursor()
    try:
        assert db.execute("SELECT voter, answer FROM votes WHERE token = ?", [token]).fetchall() == [("ann", "A")]
    finally:
        db.close()


def test_leaderboard_and_decide_tabs(running_app):
    url, _ = running_app
    ada = _client(url, "ada")
    ratings, agreement, note = ada.predict("purple", api_name="/leaderboard")
    assert len(ratings["data"]) == 4 and {row[1] for row in ratings["data"]} >= {"purple-000002.safetensors"}
    choices, evidence = ada.predict("purple", None, api_name="/decide_choices")  # preselected
    recommended = choices["value"] if isinstance(choices, dict) else choices
    assert recommended.endswith(".safetensors") and recommended in evidence and "recommended" in evidence
    warning, history = ada.predict("purple", recommended, "best in blind votes", False, api_name="/decide")
    assert history["data"][0][:2] == [recommended, "ada"] and warning.startswith("Marked")


def test_nothing_outside_the_image_folder_is_served(running_app):
    url, _ = running_app
    session = _session(url, "rita")
    for name in ("../evalsvc.duckdb", "%2e%2e/evalsvc.duckdb", "%252e%252e%252fevalsvc.duckdb",
                 "..%2fdemo-models%2fpurple-lora%2fpurple-000001.safetensors", "EVALSVC.DUCKDB"):
        response = session.get("image/" + name)
        assert response.status_code == 404 and b"DUCK" not in response.content.upper()[:4]
    assert _session(url, "bob").get("vote-image/not-a-token").status_code == 404


def _identifiers(store) -> set[str]:
    db = store.db.cursor()
    try:
        names = [n for n, in db.execute("SELECT file_name FROM checkpoints").fetchall()]
        shas = [s for s, in db.execute("SELECT sha256 FROM checkpoints").fetchall()]
    finally:
        db.close()
    stems = {n.rsplit(".", 1)[0] for n in names}
    return set(names) | stems | {s[:12] for s in shas} | {"safetensors", "-00000", "epoch", "toy-sd15"}


def test_the_vote_page_serves_nothing_identifying_before_the_vote(running_app):
    """Everything the vote page serves before a vote: its HTML, its config JSON, the pair's answer and the
    image URLs and bytes; none of it names a checkpoint, its file, sha or epoch."""
    import json

    url, store = running_app
    bob = _client(url, "bob", "vote/")
    session = _same_session(bob)
    served = [session.get("vote/").text, session.get("vote/config").text]
    token, prompt, pair, reveal, count = bob.predict(api_name="/next_pair")
    served.append(json.dumps([token, prompt, pair, reveal, count]))
    for path in re.findall(r'src="/(vote-image/[^"]+)"', pair):
        served.append(path)
        served.append(session.get(path).content.decode("latin-1"))
    text = "\n".join(served)
    leaks = sorted(i for i in _identifiers(store) if i in text)
    assert leaks == [], leaks
    assert "vote-image/" in text and "next_pair" in text  # the page and its API were really fetched


def _query(store, sql, params):
    db = store.db.cursor()
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def test_cell_endpoint_enlarges_a_grid_image_with_its_settings_and_scores(running_app):
    url, store = running_app
    ann = _client(url, "rita")
    html = ann.predict("purple", "prompt", "checkpoint", *_filters(weights="EMA"), 1, api_name="/grid")
    image, key = re.search(r'src="/image/([^"]+)" data-key="([0-9a-f]{64})"', html).groups()
    details = ann.predict("purple", key, api_name="/cell")
    (seed, cfg, prompt, infotext, name), = _query(
        store, "SELECT w.seed, w.cfg, w.prompt, s.infotext, c.file_name FROM work w JOIN samples s ON s.key = w.key "
        "JOIN checkpoints c ON c.sha256 = w.checkpoint WHERE w.key = ?", [key])
    assert (details["image"], details["weights"], details["checkpoint"]) == (image, "EMA", name)
    assert (details["seed"], details["cfg"], details["prompt"], details["infotext"]) == (seed, cfg, prompt, infotext)
    stored = dict(_query(store, "SELECT metric, value FROM scores WHERE key = ?", [key]))
    assert {s["metric"]: s["value"] for s in details["scores"]} == pytest.approx(stored) and "clip_t" in stored
    with pytest.raises(Exception, match="no sampled image"):
        ann.predict("purple", "f" * 64, api_name="/cell")


def test_compare_endpoint_shows_both_images_and_their_deltas(running_app):
    url, store = running_app
    ann = _client(url, "rita")
    html, summary, table = ann.predict("purple", "toy-sd15", "purple-000002.safetensors", "purple-circle-left-white",
                                       "1", "cfg=5", api_name="/compare")
    stored = {name: (image, value) for name, image, value in _query(
        store, "SELECT c.file_name, s.image_path, sc.value FROM grid_cells g JOIN work w ON w.key = g.key "
        "JOIN samples s ON s.key = g.key JOIN checkpoints c ON c.sha256 = w.checkpoint JOIN scores sc "
        "ON sc.key = g.key AND sc.metric = 'clip_t' WHERE g.prompt_id = 'purple-circle-left-white' AND w.seed = 1 "
        "AND w.cfg = 5", [])}
    (image_a, clip_a), (image_b, clip_b) = stored["toy-sd15"], stored["purple-000002.safetensors"]
    assert html.index(f"/image/{image_a}") < html.index(f"/image/{image_b}") and 'type="range"' in html
    rows = {row[0]: row for row in table["data"]}
    assert float(rows["clip_t ↑"][1]) == pytest.approx(clip_a, rel=1e-3)
    assert float(rows["clip_t ↑"][3]) == pytest.approx(clip_b - clip_a, rel=1e-3)
    assert rows["clip_t ↑"][6] == 9 and "both at CFG 5" in summary  # paired over the 9 target prompts
    _, best, _ = ann.predict("purple", "toy-sd15", "purple-000002.safetensors", "purple-circle-left-white", "1",
                             "best", api_name="/compare")
    assert "each at its own best setting by clip_t" in best
    with pytest.raises(Exception, match="two different checkpoints"):
        ann.predict("purple", "toy-sd15", "toy-sd15", "purple-circle-left-white", "1", "cfg=5", api_name="/compare")


def test_curves_endpoint_gives_the_recommendation_plots_and_latest_decision(running_app):
    from evalsvc.scoring.results import AnalysisConfig, run_recommendation

    url, store = running_app
    ann = _client(url, "ada")
    ann.predict("purple", "purple-ema-000001.safetensors", "curves test pick", True, api_name="/decide")
    recommendation, forest, details, decision, plots = ann.predict("purple", api_name="/curves")
    with store.thread_view() as view:
        expected = run_recommendation(view, "purple", AnalysisConfig(primary="clip_t"))
    assert f"**{expected.checkpoint}**" in recommendation.splitlines()[0] and len(recommendation.splitlines()) == 3
    assert forest.count("<svg") == 1 and all(f"- {r}" in details for r in expected.reasons)
    assert "purple-ema-000001.safetensors" in decision and "curves test pick" in decision
    assert plots.count("<svg") >= 5 and 'data-metric="clip_t"' in plots and "training loss" in plots
