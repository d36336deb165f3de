"""Images that reopen anywhere: every sampled PNG carries A1111 infotext and ComfyUI's `prompt` and `workflow`
chunks, and the graph they hold is the cell that was sampled (checked against ComfyUI's own node definitions,
written out here from its nodes.py and comfy/samplers.py)."""

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from evalsvc.cli import main
from evalsvc.sampling.grid import parse_stack
from evalsvc.sampling.infotext import Infotext, LoraUse, parse_infotext

# ComfyUI's nodes.py: INPUT_TYPES "required" (name -> link type, or None for a widget) in order, and RETURN_TYPES.
NODES = {
    "CheckpointLoaderSimple": ({"ckpt_name": None}, ("MODEL", "CLIP", "VAE")),
    "UNETLoader": ({"unet_name": None, "weight_dtype": None}, ("MODEL",)),
    "LoraLoader": ({"model": "MODEL", "clip": "CLIP", "lora_name": None, "strength_model": None,
                    "strength_clip": None}, ("MODEL", "CLIP")),
    "CLIPSetLastLayer": ({"clip": "CLIP", "stop_at_clip_layer": None}, ("CLIP",)),
    "CLIPTextEncode": ({"text": None, "clip": "CLIP"}, ("CONDITIONING",)),
    "ConditioningZeroOut": ({"conditioning": "CONDITIONING"}, ("CONDITIONING",)),
    "EmptyLatentImage": ({"width": None, "height": None, "batch_size": None}, ("LATENT",)),
    "KSampler": ({"model": "MODEL", "seed": None, "steps": None, "cfg": None, "sampler_name": None,
                  "scheduler": None, "positive": "CONDITIONING", "negative": "CONDITIONING",
                  "latent_image": "LATENT", "denoise": None}, ("LATENT",)),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ("IMAGE",)),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": None}, ()),
}
# comfy/samplers.py: KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"], and SCHEDULER_NAMES.
COMFY_SAMPLERS = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "ddim", "uni_pc", "uni_pc_bh2",
}
COMFY_SCHEDULERS = {"simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"}


def check_api_graph(api: dict) -> None:
    """Every node a known class with exactly its inputs; every link at an existing node's output of the input's type."""
    for node in api.values():
        inputs, _ = NODES[node["class_type"]]
        assert list(node["inputs"]) == list(inputs)
        for name, kind in inputs.items():
            value = node["inputs"][name]
            if kind is None:
                assert not isinstance(value, list), (node["class_type"], name)
                continue
            source, slot = value
            assert isinstance(source, str) and source in api, value
            assert NODES[api[source]["class_type"]][1][slot] == kind, (node["class_type"], name)


def check_ui_graph(ui: dict, api: dict) -> None:
    """The editor's graph: links agree with both ends' inputs and outputs, and with the API graph; widget values
    in widget order, the seed followed by its control_after_generate value."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    assert ui["version"] == 0.4 and {str(i) for i in nodes} == set(api)
    for link_id, source, slot, target, target_slot, kind in ui["links"]:
        assert link_id in nodes[source]["outputs"][slot]["links"] and nodes[source]["outputs"][slot]["type"] == kind
        end = nodes[target]["inputs"][target_slot]
        assert end["link"] == link_id and end["type"] == kind
        assert api[str(target)]["inputs"][end["name"]] == [str(source), slot]
    for node_id, node in nodes.items():
        assert node["type"] == api[str(node_id)]["class_type"]
        assert [o["type"] for o in node["outputs"]] == list(NODES[node["type"]][1])
        inputs = api[str(node_id)]["inputs"]
        widgets = []
        for name, kind in NODES[node["type"]][0].items():
            if kind is None:
                widgets += [inputs[name], "fixed"] if name == "seed" else [inputs[name]]
        assert node.get("widgets_values", []) == widgets
        assert sorted(i["name"] for i in node["inputs"]) == sorted(n for n, k in NODES[node["type"]][0].items() if k)


def chain(api: dict, link: list, kind: str) -> list[dict]:
    """The nodes a MODEL or CLIP link passes through, back to the checkpoint loader."""
    nodes = []
    while True:
        node = api[link[0]]
        nodes.append(node)
        if node["class_type"] == "CheckpointLoaderSimple":
            return nodes
        link = node["inputs"]["model" if kind == "MODEL" else "clip"]


def read_png(path: Path) -> tuple[dict, dict, dict]:
    with Image.open(path) as png:
        text = png.text
        assert list(text) == ["parameters", "prompt", "workflow"]
        return parse_infotext(text["parameters"]), json.loads(text["prompt"]), json.loads(text["workflow"])


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, sd15_pipe, sd15_dir, sd15_loras):
    """A single-file base and two LoRA epochs at strength 0.5, clip skip 1 and 2; then epoch 1 again with
    epoch 3 stacked at 0.7."""
    from evalsvc.store import open_store
    from evalsvc.toy.single_file import save_single_file

    root = tmp_path_factory.mktemp("comfy")
    base = save_single_file(sd15_pipe, root / "tiny-base.safetensors")
    suite = root / "one.toml"
    suite.write_text('name = "one"\n[[prompts]]\nid = "circle"\ntext = "a red circle, on the left"\n'
                     'negative = "blurry"\n')
    store = root / "store"
    grid = ["--suite", str(suite), "--seeds", "5", "--cfg", "6.5", "--steps", "3", "--sampler", "dpmpp_2m_karras",
            "--size", "64x64", "--lora-scale", "0.5", "--no-progress"]
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(base), "--config", str(sd15_dir),
                 *map(str, sd15_loras[:2])]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", *grid, "--clip-skip", "1,2"]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", *grid, "--with-lora", f"{sd15_loras[2]}:0.7"]) == 0
    with open_store(store, read_only=True) as s:
        rows = s.db.execute(
            "SELECT c.file_name, c.kind, w.prompt, w.negative, w.seed, w.cfg, w.steps, w.width, w.height, "
            "w.clip_skip, w.lora_scale, w.stack, s.image_path FROM work w JOIN samples s ON s.key = w.key "
            "JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()
    return base, store, rows


def test_every_png_carries_a_comfyui_graph_of_its_cell(sampled, sd15_loras):
    base, store, rows = sampled
    seen = set()
    for file_name, kind, prompt, negative, seed, cfg, steps, width, height, clip_skip, scale, stack, rel in rows:
        fields, api, ui = read_png(store / "images" / rel)
        check_api_graph(api)
        check_ui_graph(ui, api)
        stacked = bool(parse_stack(stack))
        expected_loras = (([(file_name, scale)] if kind == "lora" else [])
                          + ([(sd15_loras[2].name, 0.7)] if stacked else []))
        seen.add((kind, clip_skip, stacked))

        [sampler] = [n for n in api.values() if n["class_type"] == "KSampler"]
        inputs = sampler["inputs"]
        assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["denoise"]) == (seed, steps, cfg, 1.0)
        assert (inputs["sampler_name"], inputs["scheduler"]) == ("dpmpp_2m", "karras")
        latent = api[inputs["latent_image"][0]]["inputs"]
        assert (latent["width"], latent["height"], latent["batch_size"]) == (width, height, 1) == (64, 64, 1)
        assert api[inputs["positive"][0]]["inputs"]["text"] == prompt == "a red circle, on the left"
        assert api[inputs["negative"][0]]["inputs"]["text"] == negative == "blurry"
        [save] = [n for n in api.values() if n["class_type"] == "SaveImage"]
        assert api[api[save["inputs"]["images"][0]]["inputs"]["samples"][0]] is sampler

        models = chain(api, inputs["model"], "MODEL")
        assert models[-1]["inputs"]["ckpt_name"] == base.name
        loras = [(n["inputs"]["lora_name"], n["inputs"]["strength_model"], n["inputs"]["strength_clip"])
                 for n in reversed(models[:-1])]
        assert loras == [(name, s, s) for name, s in expected_loras]
        clips = chain(api, api[inputs["positive"][0]]["inputs"]["clip"], "CLIP")
        assert api[inputs["negative"][0]]["inputs"]["clip"] == api[inputs["positive"][0]]["inputs"]["clip"]
        layers = [n["inputs"]["stop_at_clip_layer"] for n in clips if n["class_type"] == "CLIPSetLastLayer"]
        assert layers == ([-2] if clip_skip == 2 else [])
        assert [n for n in clips if n["class_type"] == "LoraLoader"] == models[:-1]  # the same loaders, CLIP side

        # The infotext: A1111's own model hash of the single-file base, and nothing said of fp32 on the CPU.
        assert fields["Model hash"] == hashlib.sha256(base.read_bytes()).hexdigest()[:10]
        assert fields["Model"] == "tiny-base"
        assert "Precision" not in fields and "Device" not in fields
        tags = "".join(f" <lora:{Path(n).stem}:{s:g}>" for n, s in expected_loras)
        assert fields["Prompt"] == prompt + tags
    assert {("lora", 1, False), ("lora", 2, False), ("full", 1, False), ("lora", 1, True)} <= seen


def _info(**changes) -> Infotext:
    values = dict(prompt="a cat", negative="", steps=20, sampler="euler_a", cfg=7, seed=1, width=512, height=512,
                  model_hash="0123456789", model="base", model_file="base.safetensors")
    return Infotext(**{**values, **changes})


def test_precision_and_device_are_said_unless_float32_on_the_cpu():
    assert "Precision" not in parse_infotext(_info().render())
    fields = parse_infotext(_info(precision="bfloat16", device="cuda").render())
    assert (fields["Precision"], fields["Device"]) == ("bfloat16", "cuda")
    assert fields["Version"].startswith("evalsvc")  # the line still parses to the end
    fields = parse_infotext(_info(precision="float32", device="cuda").render())  # GPU kernels change pixels too
    assert (fields["Precision"], fields["Device"]) == ("float32", "cuda")


def test_the_cell_names_the_device_type_and_no_hash_for_a_folder_base():
    from evalsvc.catalog import CheckpointRow
    from evalsvc.sampling.engine import CellSpec
    from evalsvc.sampling.runner import infotext_for

    def row(name, kind, sha):
        return CheckpointRow(sha * 64, f"/m/{name}", name, kind, "sd15", "kohya" if kind == "lora" else None, None,
                             None, False, None, None, {}, "ok", None)

    folder, lora = row("tiny-sd15", "diffusers", "a"), row("mychar-000004.safetensors", "lora", "b")
    info = infotext_for(CellSpec("a cat", "", 1, 7, 20, "euler", 512, 512), lora, folder, 0.8,
                        precision="float16", device="cuda:1")
    assert (info.precision, info.device, info.model_hash, info.model) == ("float16", "cuda", None, "tiny-sd15")
    assert info.model_file == "tiny-sd15.safetensors"
    assert info.loras == (LoraUse("mychar-000004", "mychar-000004.safetensors", 0.8, "b" * 12),)
    single = row("base.safetensors", "full", "c")
    assert infotext_for(CellSpec("a cat", "", 1, 7, 20, "euler", 512, 512), lora, single, 1).model_hash == "c" * 10


def test_every_sampler_maps_to_a_comfyui_sampler_and_scheduler():
    from evalsvc.sampling.samplers import SAMPLERS, resolve_sampler

    for spec in SAMPLERS.values():
        assert spec.comfy_sampler in COMFY_SAMPLERS and spec.comfy_scheduler in COMFY_SCHEDULERS, spec.name
        assert (spec.comfy_scheduler == "karras") == (spec.schedule_type == "Karras"), spec.name
    expected = {"Euler": ("euler", "normal"), "Euler a": ("euler_ancestral", "normal"),
                "DPM++ 2M Karras": ("dpmpp_2m", "karras"), "DDIM": ("ddim", "ddim_uniform"),
                "dpm_2_a": ("dpm_2_ancestral", "normal"), "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", "karras"),
                "LMS Karras": ("lms", "karras"), "heun": ("heun", "normal"), "UniPC": ("uni_pc_bh2", "normal")}
    for name, pair in expected.items():
        spec = resolve_sampler(name)
        assert (spec.comfy_sampler, spec.comfy_scheduler) == pair, name


def test_sdxl_clip_skip_empty_negative_and_unet_only_graphs():
    from evalsvc.sampling.comfy_workflow import api_prompt, build_graph, comfy_chunks, ui_workflow

    def api(info):
        graph = build_graph(info)
        prompt, ui = api_prompt(graph), ui_workflow(graph)
        check_api_graph(prompt)
        check_ui_graph(ui, prompt)
        assert json.loads(comfy_chunks(info)["prompt"]) == prompt
        return prompt

    def of(prompt, class_type):
        return [n["inputs"] for n in prompt.values() if n["class_type"] == class_type]

    # SDXL reads the penultimate layer by default; our clip skip 2 is one further (engine.py), ComfyUI's -3.
    xl = api(_info(arch="sdxl", clip_skip=2))
    assert [i["stop_at_clip_layer"] for i in of(xl, "CLIPSetLastLayer")] == [-3]
    [zero] = of(xl, "ConditioningZeroOut")  # diffusers zeroes SDXL's empty negative
    [sampler] = of(xl, "KSampler")
    assert sampler["negative"] == [next(k for k, n in xl.items() if n["class_type"] == "ConditioningZeroOut"), 0]
    assert of(api(_info(arch="sdxl")), "CLIPSetLastLayer") == []
    assert of(api(_info(arch="sdxl", negative="ugly")), "ConditioningZeroOut") == []
    assert of(api(_info()), "ConditioningZeroOut") == []  # SD1.x encodes the empty negative
    assert [i["stop_at_clip_layer"] for i in of(api(_info(clip_skip=3)), "CLIPSetLastLayer")] == [-3]

    unet = api(_info(unet_file="finetune-unet.safetensors", loras=(LoraUse("x", "x.safetensors", 0.6, "d" * 12),)))
    [loader] = of(unet, "UNETLoader")
    assert loader == {"unet_name": "finetune-unet.safetensors", "weight_dtype": "default"}
    [lora] = of(unet, "LoraLoader")
    assert unet[lora["model"][0]]["class_type"] == "UNETLoader"
    assert unet[lora["clip"][0]]["class_type"] == "CheckpointLoaderSimple"


def test_the_starting_noise_is_comfyuis_for_a_one_image_batch():
    """ComfyUI's comfy/sample.py `prepare_noise`: `torch.manual_seed(seed)`, then `randn` over the latent's shape
    [1, 4, h/8, w/8] on the CPU in float32 (written out here as it does it)."""
    import torch

    from evalsvc.sampling.noise import cell_generator, initial_latents

    for seed, shape in ((0, (4, 8, 8)), (5, (4, 64, 96)), (2**40 + 3, (4, 128, 128))):
        with torch.random.fork_rng(devices=[]):  # leave the global generator as it was
            comfy = torch.randn((1, *shape), dtype=torch.float32, layout=torch.strided,
                                generator=torch.manual_seed(seed), device="cpu")
        assert torch.equal(initial_latents([cell_generator(seed)], shape), comfy)
        assert not torch.equal(initial_latents([cell_generator(seed + 1)], shape), comfy)
