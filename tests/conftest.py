"""Shared fixtures: tiny SD1.5/SDXL pipelines built from configs, LoRA files, fresh stores.

Everything is built offline; a missed download fails fast instead of hanging.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from evalsvc.toy.cpu_kernels import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()  # before torch is imported: the same figures on every x86-64 CI machine

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sd15_pipe():
    from evalsvc.toy.tiny import build_sd15_pipeline

    pipe = build_sd15_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sdxl_pipe():
    from evalsvc.toy.tiny import build_sdxl_pipeline

    pipe = build_sdxl_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sd15_dir(sd15_pipe, tmp_path_factory) -> Path:
    """The tiny SD1.5 pipeline saved as a diffusers folder."""
    path = tmp_path_factory.mktemp("models") / "tiny-sd15"
    sd15_pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def sdxl_dir(sdxl_pipe, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    sdxl_pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def sd15_loras(sd15_pipe, tmp_path_factory) -> list[Path]:
    """Three kohya-format LoRA epochs (`mychar-00000N.safetensors`) for the tiny SD1.5 base."""
    from evalsvc.toy.lora_files import write_kohya_epochs

    return write_kohya_epochs(sd15_pipe, tmp_path_factory.mktemp("loras"), name="mychar", epochs=3, rank=4, seed=0)


@pytest.fixture(scope="session")
def sdxl_loras(sdxl_pipe, tmp_path_factory) -> list[Path]:
    """Two kohya SDXL LoRA epochs whose UNet keys use the original SGM block names."""
    from evalsvc.toy.lora_files import write_kohya_epochs

    return write_kohya_epochs(sdxl_pipe, tmp_path_factory.mktemp("xl-loras"), name="xlchar", epochs=2, rank=4,
                              seed=1, sgm_names=True)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`evalsvc ARGV` in this process: (exit code, what it printed)."""
    import contextlib
    import io

    from evalsvc.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def second_base_and_suite(folder: Path, holdout: bool = False) -> tuple[Path, Path]:
    """Another tiny SD1.5 base (other random weights) saved as `other-sd15`, and a two-prompt suite (`square` a
    holdout prompt when `holdout`), for runs with two bases."""
    from evalsvc.toy.tiny import build_sd15_pipeline

    other = folder / "other-sd15"
    build_sd15_pipeline(seed=7).save_pretrained(other, safe_serialization=True)
    suite = folder / "two.toml"
    suite.write_text('name = "two"\n[[prompts]]\nid = "circle"\ntext = "a red circle"\n[[prompts]]\nid = "square"\n'
                     'text = "a blue square"\n' + ('role = "holdout"\n' if holdout else ""))
    return other, suite


@pytest.fixture
def store(tmp_path):
    from evalsvc.store import open_store

    with open_store(tmp_path / "store") as s:
        yield s


@pytest.fixture(scope="session")
def short_demo(tmp_path_factory):
    """The demo loop, shortened (2 epochs, 1 seed, 10 steps, no bad variants), run once: (store folder, stdout).

    Tests that write to the store copy it first (`copy_store`)."""
    from evalsvc.demo import DemoSettings

    return _run_demo(tmp_path_factory, DemoSettings(epochs=2, seeds=(1,), steps=10, variants=None, sweep=None))


@pytest.fixture(scope="session")
def full_demo(tmp_path_factory):
    """`evalsvc demo` exactly as a user runs it (about 5 minutes on 2 cores): (store folder, stdout)."""
    from evalsvc.demo import DemoSettings

    return _run_demo(tmp_path_factory, DemoSettings())


def _run_demo(tmp_path_factory, settings):
    import contextlib
    import io

    from evalsvc.demo import run_demo

    root = tmp_path_factory.mktemp("demo") / "store"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_demo(root, progress=False, settings=settings)
    assert code == 0, out.getvalue()
    return root, out.getvalue()


@pytest.fixture
def copy_store(tmp_path):
    """A writable copy of a store folder (without its lock)."""
    import shutil

    def copy(root: Path) -> Path:
        target = tmp_path / "store-copy"
        shutil.copytree(root, target, ignore=shutil.ignore_patterns("lock"))
        return target

    return copy


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(store, users=None, config=None, jobs: bool = False):
    """A context manager running the app on `store` in a uvicorn thread; yields its URL ending in '/'.

    `users`: {name: password} (roles from APP_ROLES, else voter), None: no logins (the local admin).
    With `jobs`, also its job workers and the link (store/app.json) commands use to queue work there."""
    import contextlib
    import threading
    import time

    import uvicorn

    from evalsvc.app.server import AppConfig, AppState, build_app, running_workers

    @contextlib.contextmanager
    def running():
        port = free_port()
        app_config = config or AppConfig()
        from dataclasses import replace

        state = AppState(store, replace(app_config, port=port), app_accounts(users) if users else None)
        app = build_app(state)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 60
        while not server.started and time.time() < deadline:
            time.sleep(0.1)
        assert server.started, "the app did not start within 60 s"
        url = f"http://127.0.0.1:{port}/"
        try:
            if jobs:
                with running_workers(state, url):
                    yield url
            else:
                yield url
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    return running()


APP_USERS = {"ann": "pw-ann", "bob": "pw-bob", "rita": "pw-rita", "ada": "pw-ada"}
APP_ROLES = {"rita": "reviewer", "ada": "admin"}  # ann and bob are voters


def app_accounts(users: dict[str, str]) -> dict:
    """{name: Account} of {name: password}, with the roles of APP_ROLES (voter otherwise)."""
    from evalsvc.app.access import Account

    return {name: Account(password, APP_ROLES.get(name, "voter")) for name, password in users.items()}


@pytest.fixture(scope="module")
def running_app(short_demo, tmp_path_factory):
    """The app on a copy of the short demo store with APP_USERS (voters ann and bob, reviewer rita, admin ada;
    password pw-<name>): (url, store)."""
    import shutil

    from evalsvc.store import open_store

    root = tmp_path_factory.mktemp("app") / "store"
    shutil.copytree(short_demo[0], root, ignore=shutil.ignore_patterns("lock"))
    with open_store(root) as store, serve_app(store, APP_USERS) as url:
        yield url, store


def side_balance(placements: list[tuple[str, str]]) -> tuple[float, dict[str, tuple[int, int]]]:
    """(p-value, {checkpoint: (times left, times right)}) of the hypothesis that sides are a fair coin.

    Counted per pair of checkpoints, since one pair puts one checkpoint left and the other right: for each
    pair {i, j} the times i was left against the times j was, a chi-square with one degree of freedom per pair.
    """
    from collections import Counter

    from scipy.stats import chisquare

    by_pair = Counter(placements)
    pairs = sorted({tuple(sorted(p)) for p in by_pair})
    observed = [by_pair[(i, j)] for i, j in pairs] + [by_pair[(j, i)] for i, j in pairs]
    expected = [(by_pair[(i, j)] + by_pair[(j, i)]) / 2 for i, j in pairs] * 2
    sides = {sha: (sum(n for (left, _), n in by_pair.items() if left == sha),
                   sum(n for (_, right), n in by_pair.items() if right == sha)) for pair in pairs for sha in pair}
    return chisquare(observed, expected, ddof=len(pairs) - 1).pvalue, sides
