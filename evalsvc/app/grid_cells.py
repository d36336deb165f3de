"""A run's image cells held in memory as arrays, so that a grid page is a few vectorised steps over them.

`RunCells.read` takes every cell of a run once (one query) and codes each axis as the rank of the cell's label
among the axis's choices; `RunCells.page` then pins, ranks and pages with numpy: a warm page build does not
grow with joins over the run's rows (see `bench/grid_page.py`). `evalsvc.app.grid.AxesCache` keeps one per
run until the run changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PageCells:
    """The row and column ranks of one page, and the index of the cell shown at each (row, column)."""

    rows: int  # how many row values the pinned grid has, over every page
    columns: np.ndarray  # every column rank of the pinned grid, in order
    shown: list[tuple[int, int, int]]  # (row rank, column rank, cell index), in row then column order


@dataclass(frozen=True)
class RunCells:
    ranks: dict[str, np.ndarray]  # axis -> each cell's rank of its label among the axis's choices
    tie: np.ndarray  # each cell's place in base/raw/EMA preference, then key, then setting order
    keys: np.ndarray
    images: np.ndarray
    prompts: np.ndarray
    checkpoints: np.ndarray  # each cell's checkpoint sha256
    seeds: np.ndarray

    @classmethod
    def read(cls, db, run: str, rows_sql: str, sources: dict[str, str], labels: dict[str, dict],
             choices: dict[str, tuple[str, ...]], preference: dict[str, int]) -> RunCells:
        """Every cell of `run` (`rows_sql`: FROM ... over grid_cells g, work w, samples s), each axis coded
        from its stored value (`sources[axis]`) through `labels` to its place in `choices`."""
        columns = list(dict.fromkeys(sources.values()))
        found = db.execute(f"SELECT g.key, s.image_path, w.prompt, "
                           f"{', '.join(f'{c} AS s{i}' for i, c in enumerate(columns))} {rows_sql} WHERE g.run = ? "
                           "ORDER BY g.key, g.setting", [run]).fetchnumpy()
        stored = {c: found[f"s{i}"] for i, c in enumerate(columns)}
        distinct = {c: _distinct(values) for c, values in stored.items()}
        ranks = {}
        for axis, source in sources.items():
            place = {label: n for n, label in enumerate(choices[axis])}
            ranks[axis] = _coded(distinct[source], lambda value: place[labels[axis][value]])
        # in key, setting order already: a stable sort by preference gives the tie order
        order = np.argsort(_coded(distinct[sources["checkpoint"]], preference.__getitem__), kind="stable")
        tie = np.empty(len(order), dtype=np.int64)
        tie[order] = np.arange(len(order))
        return cls(ranks, tie, found["key"], found["image_path"], found["prompt"], stored[sources["checkpoint"]],
                   stored[sources["seed"]])

    def page(self, pins: dict[str, int], rows: str, columns: str, first: int, count: int) -> PageCells:
        """The cells where each axis of `pins` has its rank, their rows `first` to `first + count`, and at each
        (row, column) the first cell in `tie` order."""
        mask = np.ones(len(self.keys), dtype=bool)
        for axis, rank in pins.items():
            mask &= self.ranks[axis] == rank
        row_ranks, column_ranks = self.ranks[rows], self.ranks[columns]
        all_rows = np.unique(row_ranks[mask])
        chosen = np.flatnonzero(mask & np.isin(row_ranks, all_rows[first:first + count]))
        chosen = chosen[np.lexsort((self.tie[chosen], column_ranks[chosen], row_ranks[chosen]))]
        shown, last = [], None
        for index in chosen.tolist():
            at = (int(row_ranks[index]), int(column_ranks[index]))
            if at != last:
                shown.append((*at, index))
                last = at
        return PageCells(len(all_rows), np.unique(column_ranks[mask]), shown)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, list]:
    """Each value's index among the distinct values, and those values (found by hashing: `pandas.factorize`)."""
    import pandas as pd

    index, distinct = pd.factorize(values)
    return index, [v.item() if isinstance(v, np.generic) else v for v in distinct]  # as the labels are keyed


def _coded(distinct: tuple[np.ndarray, list], code) -> np.ndarray:
    """`code(value)` of each value, computed once per distinct value."""
    index, values = distinct
    return np.array([code(v) for v in values], dtype=np.int64)[index]
