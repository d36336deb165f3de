"""The DuckDB store: one database file beside a folder of content-addressed images."""

from .store import Store, StoreLayout, default_store_path, open_store

__all__ = ["Store", "StoreLayout", "default_store_path", "open_store"]
