"""The optional preference scorers: the LAION aesthetic head and PickScore, on weights built here (tiny, from
configs), against the original architecture and the model's own forward; missing or pickled weights skip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from evalsvc.scoring.backbone import BackboneSpec
from evalsvc.scoring.preference import AESTHETIC_LAYERS
from evalsvc.scoring.registry import PreferenceWeights, ScoreConfig
from evalsvc.scoring.runner import score_run
from evalsvc.store import open_store


def _config(metric: str, **weights) -> ScoreConfig:
    return ScoreConfig(metrics=(metric,), backbone=BackboneSpec.toy(), preference=PreferenceWeights(**weights),
                       progress=False)


def _values(store, metric):
    return dict(store.db.execute("SELECT key, value FROM scores WHERE metric = ?", [metric]).fetchall())


def _original_predictor(dim: int, sizes) -> torch.nn.Module:
    """improved-aesthetic-predictor's MLP, layer for layer (dropout between the first four Linear layers)."""
    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(dim, sizes[0]), torch.nn.Dropout(0.2), torch.nn.Linear(sizes[0], sizes[1]),
                torch.nn.Dropout(0.2), torch.nn.Linear(sizes[1], sizes[2]), torch.nn.Dropout(0.1),
                torch.nn.Linear(sizes[2], sizes[3]), torch.nn.Linear(sizes[3], 1))

        def forward(self, x):
            return self.layers(x)

    torch.manual_seed(0)
    return MLP().eval()


@pytest.fixture
def demo_copy(short_demo, copy_store):
    root = copy_store(short_demo[0])
    with open_store(root) as store:
        dim = len(store.db.execute("SELECT vector FROM embeddings LIMIT 1").fetchone()[0])
    return root, dim


def test_aesthetic_is_the_original_mlp_on_normalised_cached_embeddings(demo_copy, tmp_path):
    root, dim = demo_copy
    predictor = _original_predictor(dim, (16, 8, 8, 4))
    head = tmp_path / "head.safetensors"
    save_file({k: v.numpy() for k, v in predictor.state_dict().items()}, str(head))
    assert {k.rsplit(".", 1)[0] for k in predictor.state_dict()} == set(AESTHETIC_LAYERS)
    with open_store(root) as store:
        report = score_run(store, "purple", _config("aesthetic", aesthetic=head))
        values = _values(store, "aesthetic")
        embeddings = dict(store.db.execute(
            "SELECT s.key, e.vector FROM samples s JOIN embeddings e ON e.image_sha256 = s.image_sha256").fetchall())
    assert report.computed == {"aesthetic": len(values)} and len(values) == len(embeddings)
    keys = sorted(values)
    x = torch.tensor(np.array([embeddings[k] for k in keys]), dtype=torch.float32)
    with torch.no_grad():
        expected = predictor(x / x.norm(dim=-1, keepdim=True))[:, 0].numpy()
    np.testing.assert_allclose([values[k] for k in keys], expected, rtol=1e-4, atol=1e-5)


def test_aesthetic_pickle_needs_opt_in_and_a_mismatched_head_is_skipped(demo_copy, tmp_path):
    root, dim = demo_copy
    predictor = _original_predictor(dim, (16, 8, 8, 4))
    pickled = tmp_path / "head.pth"
    torch.save(predictor.state_dict(), pickled)
    wide = tmp_path / "vit-l.safetensors"
    save_file({k: v.numpy() for k, v in _original_predictor(768, (16, 8, 8, 4)).state_dict().items()}, str(wide))
    with open_store(root) as store:
        [line] = score_run(store, "purple", _config("aesthetic", aesthetic=pickled)).skipped
        assert line.startswith("aesthetic skipped:") and "pickle" in line and "--allow-pickle" in line
        assert _values(store, "aesthetic") == {}
        opted = score_run(store, "purple", _config("aesthetic", aesthetic=pickled, allow_pickle=True))
        assert opted.computed["aesthetic"] == len(_values(store, "aesthetic")) > 0
        [line] = score_run(store, "purple", _config("aesthetic", aesthetic=wide)).skipped
        assert "reads 768-value image embeddings" in line and f"gives {dim}" in line
        [line] = score_run(store, "purple", _config("aesthetic")).skipped
        assert "--aesthetic-weights" in line and "\n" not in line


def _tiny_pickscore(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from evalsvc.toy.tokenizer import clip_tokenizer

    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=16, logit_scale_init_value=4.0)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return model, CLIPProcessor.from_pretrained(folder)


def test_pickscore_is_the_models_own_logit_for_image_and_prompt(demo_copy, tmp_path):
    from evalsvc.scoring.cells import run_cells

    root, _ = demo_copy
    model, processor = _tiny_pickscore(tmp_path / "pickscore")
    with open_store(root) as store:
        report = score_run(store, "purple", _config("pickscore", pickscore=tmp_path / "pickscore"))
        values = _values(store, "pickscore")
        cells = run_cells(store, "purple")
    assert report.computed == {"pickscore": len(cells)} == {"pickscore": len(values)}
    for cell in cells[::7]:
        with Image.open(cell.image_path) as image, torch.no_grad():
            inputs = processor(text=[cell.prompt], images=[image.convert("RGB")], return_tensors="pt", padding=True)
            expected = model(**inputs).logits_per_image[0, 0].item()
        assert values[cell.key] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_pickscore_without_weights_is_skipped_with_one_line(demo_copy, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    root, _ = demo_copy
    with open_store(root) as store:
        [line] = score_run(store, "purple", _config("pickscore")).skipped
        assert _values(store, "pickscore") == {}
    assert line.startswith("pickscore skipped:") and "yuvalkirstain/PickScore_v1" in line and "\n" not in line
