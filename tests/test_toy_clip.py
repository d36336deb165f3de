"""The toy CLIP: the committed weights load through open_clip's own path and tell toy-world scenes apart."""

from __future__ import annotations

import json
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from evalsvc.toy.clip import (  # noqa: E402
    CONFIG_PATH, TOY_CLIP_NAME, load_toy_clip, register_toy_clip, toy_clip_weights)
from trainer.toyworld.clip_train import (  # noqa: E402
    ClipTrainConfig, contrastive_loss, inference_preprocess, new_model, retrieval_accuracy, save_toy_clip,
    shape_triples, to_tensor, train_steps)
from trainer.toyworld.world import COLOURS, SHAPES, all_scenes, draw  # noqa: E402

CONFIG = json.loads(CONFIG_PATH.read_text())
HELD_OUT_SEED = 4242  # neither the training stream nor the build's evaluation seed


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread, as the asset was built: steadier timings on a shared machine, same numbers each run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_clip():
    register_toy_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(TOY_CLIP_NAME, pretrained=str(toy_clip_weights()))
    return model.eval(), preprocess, open_clip.get_tokenizer(TOY_CLIP_NAME)


def _read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_register_twice_is_harmless():
    assert register_toy_clip() == register_toy_clip() == TOY_CLIP_NAME
    from open_clip import factory

    assert factory._MODEL_CONFIG_PATHS.count(CONFIG_PATH) == 1
    assert open_clip.list_models().count(TOY_CLIP_NAME) == 1
    assert open_clip.get_model_config(TOY_CLIP_NAME) == CONFIG


def test_asset_is_small_fp16_and_carries_its_build(toy_clip):
    tensors, metadata = _read(toy_clip_weights())
    assert toy_clip_weights().stat().st_size <= 6_000_000
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert metadata["open_clip_model"] == TOY_CLIP_NAME
    assert ClipTrainConfig(**json.loads(metadata["config"])).steps == int(metadata["steps"])
    assert json.loads(metadata["retrieval"])["image_to_text"] >= 0.9
    # open_clip's loader really read the file (cast to fp32), rather than leaving a random init
    model = toy_clip[0]
    state = model.state_dict()
    assert set(tensors) == set(state)
    for key, value in tensors.items():
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], value.float()), key


def test_embeddings_have_the_configured_width(toy_clip):
    model, preprocess, tokenizer = toy_clip
    assert tokenizer.context_length == CONFIG["text_cfg"]["context_length"] == 77
    scenes = all_scenes()[:3]
    rng = random.Random(0)
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(draw(s, rng)) for s in scenes]))
        text = model.encode_text(tokenizer([s.caption for s in scenes]))
    assert image.shape == text.shape == (3, CONFIG["embed_dim"])


def test_load_toy_clip_matches_the_plain_open_clip_path(toy_clip):
    model, _, tokenizer = load_toy_clip()
    tokens = tokenizer(["a purple triangle at the top, gray background"])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), toy_clip[0].encode_text(tokens))


def test_held_out_retrieval_is_far_above_chance(toy_clip):
    # measured at build: 0.93 image->text, 0.97 text->image; shape 0.93, the other attributes 1.0
    figures = retrieval_accuracy(*toy_clip, n_images=60, seed=HELD_OUT_SEED)
    assert figures["image_to_text"] >= 0.8, figures  # chance is 1/225
    assert figures["text_to_image"] >= 0.8, figures
    assert figures["shape"] >= 0.8, figures  # chance 1/3; circle against square is the hard case
    for attribute in ("colour", "position", "background"):
        assert figures[attribute] >= 0.95, (attribute, figures)


def test_untrained_model_retrieves_at_chance():
    model = new_model(seed=0).eval()
    figures = retrieval_accuracy(model, inference_preprocess(model), open_clip.get_tokenizer(TOY_CLIP_NAME),
                                 n_images=60, seed=HELD_OUT_SEED)
    assert figures["image_to_text"] < 0.1


def test_fast_tensor_path_matches_preprocess(toy_clip):
    preprocess = toy_clip[1]
    rng = random.Random(1)
    images = [draw(s, rng) for s in all_scenes()[::50]]
    expected = torch.stack([preprocess(image) for image in images])
    torch.testing.assert_close(to_tensor(images, preprocess), expected, atol=1e-6, rtol=0)


def test_loss_is_open_clips_clip_loss_when_the_batch_is_every_scene():
    from open_clip.loss import ClipLoss

    model = new_model(seed=1).eval()
    scenes = all_scenes(tuple(COLOURS))
    picked = random.Random(2).sample(range(len(scenes)), len(scenes))
    rng = random.Random(3)
    images = to_tensor([draw(scenes[i], rng) for i in picked], inference_preprocess(model))
    tokens = open_clip.get_tokenizer(TOY_CLIP_NAME)([s.caption for s in scenes])
    with torch.no_grad():
        ours = contrastive_loss(model, images, picked, tokens)
        image_features, text_features, logit_scale = model(images, tokens[picked])[:3]
        reference = ClipLoss()(image_features, text_features, logit_scale)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_batches_are_distinct_scenes_in_shape_triples():
    scenes = all_scenes(tuple(COLOURS))
    picked = shape_triples(random.Random(0), scenes, 96)
    assert len(set(picked)) == len(picked) == 96
    for start in range(0, 96, 3):
        group = [scenes[i] for i in picked[start:start + 3]]
        assert sorted(s.shape for s in group) == sorted(SHAPES)
        assert len({(s.colour, s.position, s.background) for s in group}) == 1


def _short_run(config):
    model = new_model(config.seed)
    losses = [loss for _, loss in train_steps(model, config)]
    return model, losses


def test_short_training_reduces_the_loss_deterministically(tmp_path):
    config = ClipTrainConfig(seed=3, steps=8, batch_size=24, lr=3e-3, warmup_steps=1)
    scenes = all_scenes(tuple(COLOURS))
    picked = list(range(0, len(scenes), 7))
    rng = random.Random("fixed batch")
    before = new_model(config.seed)
    images = to_tensor([draw(scenes[i], rng) for i in picked], inference_preprocess(before))
    tokens = open_clip.get_tokenizer(TOY_CLIP_NAME)([s.caption for s in scenes])
    with torch.no_grad():
        loss_before = contrastive_loss(before.eval(), images, picked, tokens).item()
    model, losses = _short_run(config)
    with torch.no_grad():
        loss_after = contrastive_loss(model, images, picked, tokens).item()
    assert len(losses) == config.steps
    assert loss_after < loss_before - 0.2  # measured 4.80 -> 4.38

    again, losses_again = _short_run(config)
    assert losses == losses_again
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key

    # the fp16 file it saves loads back through open_clip with embeddings within fp16 rounding
    path = save_toy_clip(model, tmp_path / "toyclip.safetensors", config=config, build_seconds=0.0,
                         figures={}, eval_seed=0, eval_images=0)
    loaded, _, _ = load_toy_clip(weights=path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens), atol=2e-2, rtol=0)


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch_size", 0), ("batch_size", 228), ("batch_size", 32),
                                          ("lr", 0.0), ("warmup_steps", 1000), ("weight_decay", -1.0)])
def test_config_refuses_nonsense(field, value):
    with pytest.raises(ValueError, match=field):
        ClipTrainConfig(**{field: value})


def test_text_tower_as_transformers_model_reproduces_encode_text(toy_clip):
    """The toy base's frozen text encoder is the toy CLIP's text tower: same hidden state at the end token."""
    from evalsvc.toy.tokenizer import clip_tokenizer
    from trainer.toyworld.clip_text import toy_clip_text_encoder

    model, _, tokenizer = toy_clip
    captions = ["a red circle on the left, white background", "a purple triangle at the top, gray background"]
    ids = clip_tokenizer()(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    # open_clip pads with 0, the pipeline's tokenizer with the end token; up to the end token they agree
    assert torch.equal(ids[:, :11], tokenizer(captions)[:, :11])
    with torch.no_grad():
        hidden = toy_clip_text_encoder().eval()(ids).last_hidden_state
        end = ids.argmax(dim=-1)
        torch.testing.assert_close(hidden[torch.arange(2), end] @ model.text_projection, model.encode_text(ids),
                                   rtol=1e-5, atol=1e-5)
        # shape and position words change the per-token states the UNet attends to, not only colour
        swapped = clip_tokenizer()(["a red square on the right, white background"], padding="max_length",
                                   max_length=77, return_tensors="pt").input_ids
        assert (toy_clip_text_encoder()(swapped).last_hidden_state[0, 3:9] - hidden[0, 3:9]).norm(dim=-1).min() > 0.5
