"""The app through HTTP and `gradio_client`: each tab's main action, logins as voters, and the image routes."""

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


def test_grid_tab_shows_a_page_of_store_images(running_app):
    import httpx

    url, _ = running_app
    html = _client(url, "ann").predict("purple", "prompt", "checkpoint", "(first)", "(first)", "(first)", "(first)",
                                       "(first)", 0, api_name="/grid")
    images = re.findall(r'src="/image/([0-9a-f]{2}/[0-9a-f]{64}\.png)"', html)
    assert "page 1 of 3" in html and len(images) == 6 * 3  # 6 prompts per page x (base, epoch 1, epoch 2)
    response = _session(url, "ann").get("image/" + images[0])
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert httpx.get(url + "image/" + images[0]).status_code == 401  # no session, no image


def test_vote_tab_issues_a_pair_records_one_vote_and_reveals(running_app):
    url, store = running_app
    ann = _client(url, "ann", "vote/")
    token, prompt, left, right, _ = ann.predict(api_name="/next_pair")
    assert prompt.startswith("**Prompt:**") and "/vote-image/" in left and "/vote-image/" in right
    session = _session(url, "ann", "vote/")
    left_url = re.search(r'src="/(vote-image/[^"]+)"', left).group(1)
    image = session.get(left_url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert not any(chunk in image.content for chunk in (b"tEXt", b"iTXt", b"zTXt", b"parameters", b"eXIf"))
    reveal = ann.predict(token, "A", api_name="/vote")
    assert session.get(left_url).status_code == 404  # an answered pair's images are gone
    assert re.search(r"A was \*\*purple-(ema-)?00000\d\.safetensors\*\*", reveal)
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
    ann = _client(url, "ann")
    ratings, agreement, note = ann.predict("purple", api_name="/leaderboard")
    assert len(ratings["data"]) == 4 and {row[1] for row in ratings["data"]} >= {"purple-000002.safetensors"}
    history = ann.predict("purple", "purple-000002.safetensors", "best in blind votes", api_name="/decide")
    assert history["data"][0][:2] == ["purple-000002.safetensors", "ann"]


def test_nothing_outside_the_image_folder_is_served(running_app):
    url, _ = running_app
    session = _session(url, "bob")
    for name in ("../evalsvc.duckdb", "%2e%2e/evalsvc.duckdb", "%252e%252e%252fevalsvc.duckdb",
                 "..%2fdemo-models%2fpurple-lora%2fpurple-000001.safetensors", "EVALSVC.DUCKDB"):
        response = session.get("image/" + name)
        assert response.status_code == 404 and b"DUCK" not in response.content.upper()[:4]
    assert session.get("vote-image/not-a-token").status_code == 404


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
    session = _session(url, "bob", "vote/")
    served = [session.get("vote/").text, session.get("vote/config").text]
    token, prompt, left, right, reveal = _client(url, "bob", "vote/").predict(api_name="/next_pair")
    served.append(json.dumps([token, prompt, left, right, reveal]))
    for path in re.findall(r'src="/(vote-image/[^"]+)"', left + right):
        served.append(path)
        served.append(session.get(path).content.decode("latin-1"))
    text = "\n".join(served)
    leaks = sorted(i for i in _identifiers(store) if i in text)
    assert leaks == [], leaks
    assert "vote-image/" in text and "next_pair" in text  # the page and its API were really fetched
