"""Where the trainer sends each saved epoch: a store it owns, or the evalsvc app that owns the store.

Either way the epoch's checkpoints are registered under the run `train.output_name` with the base model and
the step-wise loss; with `[eval] suite`, a store sink queues the epoch's grid as pending cells (sampled by
`evalsvc sample --run NAME`), the app samples it at once in its job workers.
"""

from __future__ import annotations

import getpass
from pathlib import Path

from evalsvc.errors import InputError

from .config import TrainConfig


class StoreSink:
    """Registers epochs in a store this process has open."""

    def __init__(self, store, config: TrainConfig):
        from evalsvc.suites import load_suite

        self.store, self.config = store, config
        self.suite = load_suite(config.eval.suite) if config.eval.suite else None  # a bad suite stops us before step 1
        self.options = config.eval.grid_options()

    def epoch_saved(self, paths: list[Path], losses: list[list]) -> None:
        from evalsvc.catalog import add_checkpoints
        from evalsvc.sampling.grid import plan_grid
        from evalsvc.store.bulk import insert_rows

        run = self.config.train.output_name
        report = add_checkpoints(self.store, paths, run, base=Path(self.config.model.base))
        if report.refused:
            raise InputError("; ".join(f"{p}: {r}" for p, r in report.refused))
        with self.store.transaction() as db:
            insert_rows(db, "losses", ["run", "step", "epoch", "loss", "lr"], losses)
        if self.suite is not None:
            plan_grid(self.store, run, self.suite, self.options)


class AppSink:
    """Queues each epoch as an `add` job in the app that owns the store (`evalsvc.owner`)."""

    def __init__(self, link, config: TrainConfig):
        from evalsvc.suites import load_suite

        if config.eval.suite:
            load_suite(config.eval.suite)
        self.link, self.config = link, config

    def epoch_saved(self, paths: list[Path], losses: list[list]) -> None:
        from evalsvc.owner import submit_job

        suite = self.config.eval.suite
        if suite and Path(suite).exists():
            suite = str(Path(suite).resolve())
        ev = self.config.eval
        args = {"run": self.config.train.output_name, "paths": [str(Path(p).resolve()) for p in paths],
                "base": str(Path(self.config.model.base).resolve()), "losses": losses, "suite": suite,
                "seeds": list(ev.seeds) if ev.seeds else None, "cfg": list(ev.cfgs) if ev.cfgs else None,
                "steps": list(ev.steps) if ev.steps else None, "sampler": list(ev.sampler) if ev.sampler else None,
                "lora_scale": list(ev.lora_scales or (1.0,))}
        submit_job(self.link, "add", args, f"{getpass.getuser()} (evalsvc train)")


def open_sink(store_path: Path | None, config: TrainConfig):
    """The sink for `evalsvc train --store PATH`: (sink, store to close or None); (None, None) without a store."""
    from evalsvc.errors import StoreInUseError
    from evalsvc.owner import find_link
    from evalsvc.store import open_store

    if store_path is None:
        return None, None
    try:
        store = open_store(store_path)
    except StoreInUseError:
        link = find_link(store_path)
        if link is None:
            raise
        return AppSink(link, config), None
    try:
        return StoreSink(store, config), store
    except BaseException:
        store.close()
        raise
