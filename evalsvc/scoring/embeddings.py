"""Image embeddings computed once per (image content, backbone), batched, and cached in the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..store.bulk import insert_rows


def cached_embeddings(store, backbone_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
    return cached_embeddings_in(store.db, backbone_id, hashes)


def cached_embeddings_in(db, backbone_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
    """The stored embeddings among `hashes` by `backbone_id` (a connection or a request's cursor)."""
    if not hashes:
        return {}
    rows = db.execute(
        "SELECT image_sha256, vector FROM embeddings WHERE backbone = ? "
        "AND image_sha256 IN (SELECT unnest(?::VARCHAR[]))", [backbone_id, sorted(set(hashes))]).fetchall()
    return {sha: np.asarray(vector, dtype=np.float32) for sha, vector in rows}


def image_embeddings(store, backbone, images: dict[str, Path], batch_size: int = 64,
                     progress: bool = True) -> dict[str, np.ndarray]:
    """Embeddings of `images` ({content sha256: file}) by `backbone`; only the missing ones are computed,
    and each batch is stored as soon as it is done (an interrupted run keeps what it computed)."""
    found = cached_embeddings(store, backbone.id, list(images))
    missing = [sha for sha in images if sha not in found]
    bar = tqdm(total=len(missing), desc=f"embedding images ({backbone.id})", unit="img",
               disable=not progress or not missing)
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        pictures = []
        for sha in chunk:
            with Image.open(images[sha]) as image:
                pictures.append(image.convert("RGB"))
        vectors = backbone.embed_images(pictures)
        with store.transaction() as db:
            insert_rows(db, "embeddings", ["image_sha256", "backbone", "vector"],
                        [[sha, backbone.id, vector.tolist()] for sha, vector in zip(chunk, vectors)])
        found.update(zip(chunk, vectors))
        bar.update(len(chunk))
    bar.close()
    return found
