"""The app serves store images only: the database, checkpoints, traversal in any spelling and symlinks out
are refused."""

import hashlib

import pytest

from evalsvc.app.files import FileRefused, resolve_image


@pytest.fixture
def store_tree(tmp_path):
    root = tmp_path / "store"
    images = root / "images"
    digest = hashlib.sha256(b"png").hexdigest()
    (images / digest[:2]).mkdir(parents=True)
    (images / digest[:2] / f"{digest}.png").write_bytes(b"png")
    (root / "evalsvc.duckdb").write_bytes(b"db")
    (root / "models").mkdir()
    (root / "models" / "lora.safetensors").write_bytes(b"weights")
    outside = hashlib.sha256(b"outside").hexdigest()
    (images / outside[:2]).mkdir(exist_ok=True)
    (images / outside[:2] / f"{outside}.png").symlink_to(root / "evalsvc.duckdb")
    return images, f"{digest[:2]}/{digest}.png", f"{outside[:2]}/{outside}.png"


def test_a_store_image_is_served(store_tree):
    images, name, _ = store_tree
    assert resolve_image(images, name) == (images / name).resolve()
    assert resolve_image(images, name.replace("/", "%2F")).read_bytes() == b"png"


@pytest.mark.parametrize("request_name", [
    "../evalsvc.duckdb", "evalsvc.duckdb", "/etc/passwd", "../models/lora.safetensors",
    "%2e%2e/evalsvc.duckdb", "%2E%2E%2Fevalsvc.duckdb", "%252e%252e%252fevalsvc.duckdb",
    "%25252e%25252e/evalsvc.duckdb", "..%5cevalsvc.duckdb", "ab/../../evalsvc.duckdb", "",
])
def test_traversal_and_other_files_are_refused(store_tree, request_name):
    images, _, _ = store_tree
    with pytest.raises(FileRefused):
        resolve_image(images, request_name)


def test_case_variants_other_suffixes_and_symlinks_out_are_refused(store_tree):
    images, name, symlink = store_tree
    for variant in (name.upper(), name[:-4] + ".PNG", name[:-4] + ".png.bak", name + "\x00", "./" + name,
                    name.replace("/", "\\")):
        with pytest.raises(FileRefused):
            resolve_image(images, variant)
    with pytest.raises(FileRefused, match="outside"):
        resolve_image(images, symlink)
    prefix = name[:2]
    with pytest.raises(FileRefused, match="no such image"):  # well formed, but not in the store
        resolve_image(images, f"{prefix}/{prefix}{'f' * 62}.png")
