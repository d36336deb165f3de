"""Many rows in one statement: DuckDB's `executemany` costs milliseconds per row."""

from __future__ import annotations


def _column_types(db, table: str) -> dict[str, str]:
    return {name: kind for name, kind in db.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}


def insert_rows(db, table: str, columns: list[str], rows: list[list], on_conflict: str = "DO NOTHING") -> None:
    """INSERT `rows` (each a list in `columns` order) as one statement, unnesting one list per column."""
    if not rows:
        return
    types = _column_types(db, table)
    selects = ", ".join(f"unnest(?::{types[c]}[])" for c in columns)
    db.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM (SELECT {selects}) "
               f"ON CONFLICT {on_conflict}", [list(values) for values in zip(*rows)])
