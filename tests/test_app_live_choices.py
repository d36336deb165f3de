"""Choices that change while the app runs: a checkpoint registered and a seed sampled after start show in the
dropdowns on the next tab opening, without a restart."""

from __future__ import annotations

import shutil
import time

from evalsvc.cli import main
from evalsvc.jobs import get_job
from evalsvc.store import open_store

from conftest import APP_USERS, serve_app

ONE_PROMPT = """name = "one"
description = "one purple prompt"

[[prompts]]
id = "purple-circle-left-white"
text = "a purple circle on the left, white background"
"""


def _done(store, out: str, timeout: float = 300.0):
    """The job a command queued in the app (its id read from `out`), once finished."""
    job_id = int(out.split("queued as job ")[1].split()[0])
    deadline = time.time() + timeout
    while time.time() < deadline:
        with store.thread_view() as view:
            job = get_job(view.db, job_id)
        if job.state in ("done", "failed"):
            assert job.state == "done", job.output
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def _choices(update) -> list[str]:
    """The choices of a dropdown as an event's API answer gives them (an update: {"choices": [[label, value]…]})."""
    return [value for _, value in update["choices"]]


def test_a_checkpoint_and_a_seed_added_while_the_app_runs_show_in_its_dropdowns(short_demo, tmp_path, capsys):
    from gradio_client import Client
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from evalsvc.app.grid import AXES

    root = tmp_path / "store"
    shutil.copytree(short_demo[0], root, ignore=shutil.ignore_patterns("lock"))
    source = root / "demo-models" / "purple-lora" / "purple-000002.safetensors"
    with safe_open(str(source), "pt") as f:
        metadata = {**(f.metadata() or {}), "ss_epoch": "3"}
    new = tmp_path / "out" / "purple-000003.safetensors"
    new.parent.mkdir()
    save_file({k: v * 1.01 for k, v in load_file(source).items()}, new, metadata)
    suite = tmp_path / "one.toml"
    suite.write_text(ONE_PROMPT)

    with open_store(root) as store, serve_app(store, APP_USERS, jobs=True) as url:
        ada = Client(url, auth=("ada", APP_USERS["ada"]), verbose=False)
        unpinned = ["(first)"] * len(AXES)
        decide_before, _ = ada.predict("purple", None, api_name="/decide_choices")
        grid_before = ada.predict("purple", *unpinned, api_name="/grid_filters")
        assert "purple-000003.safetensors" not in _choices(decide_before)
        assert "77" not in _choices(grid_before[AXES.index("seed")])

        assert main(["add", "--store", str(root), "--run", "purple", str(new)]) == 0
        _done(store, capsys.readouterr().out)
        decide_after, _ = ada.predict("purple", None, api_name="/decide_choices")  # the Decide tab opened again
        assert "purple-000003.safetensors" in _choices(decide_after)

        assert main(["sample", "--store", str(root), "--run", "purple", "--suite", str(suite), "--seeds", "77",
                     "--cfg", "5", "--steps", "4", "--sampler", "euler", "--no-progress"]) == 0
        _done(store, capsys.readouterr().out)
        grid_after = ada.predict("purple", *unpinned, api_name="/grid_filters")  # the Grid tab opened again
        assert "77" in _choices(grid_after[AXES.index("seed")])
        assert "purple-000003" in _choices(grid_after[AXES.index("checkpoint")])
        compare = ada.predict("purple", None, None, None, None, None, api_name="/compare_choices")
        assert "purple-000003.safetensors" in _choices(compare[0]) and "77" in [str(s) for s in _choices(compare[3])]
