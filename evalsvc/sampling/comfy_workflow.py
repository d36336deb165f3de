"""ComfyUI's two PNG chunks for one image: `prompt` (the API-format graph) and `workflow` (the editor's graph).

The graph is ComfyUI's txt2img chain of core nodes, with the input names, input order and output slots of
their INPUT_TYPES / RETURN_TYPES in ComfyUI's `nodes.py`: CheckpointLoaderSimple (→ UNETLoader for a UNet-only
checkpoint) → LoraLoader per LoRA → CLIPSetLastLayer (clip skip) → CLIPTextEncode ×2 → EmptyLatentImage →
KSampler → VAEDecode → SaveImage. Both chunks are drawn from one node list, so they cannot disagree; both are
`json.dumps` of the graph, as ComfyUI's SaveImage writes them. They reproduce the setting; ComfyUI's pixels
differ (README).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .infotext import Infotext
from .samplers import resolve_sampler

# RETURN_TYPES of the nodes used: an output's slot is its index here.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "CheckpointLoaderSimple": ("MODEL", "CLIP", "VAE"),
    "UNETLoader": ("MODEL",),
    "LoraLoader": ("MODEL", "CLIP"),
    "CLIPSetLastLayer": ("CLIP",),
    "CLIPTextEncode": ("CONDITIONING",),
    "ConditioningZeroOut": ("CONDITIONING",),
    "EmptyLatentImage": ("LATENT",),
    "KSampler": ("LATENT",),
    "VAEDecode": ("IMAGE",),
    "SaveImage": (),
}
SEED_CONTROL = "fixed"  # the editor's control_after_generate widget after a seed: keep it on re-queue


@dataclass(frozen=True)
class Link:
    """Output `slot` of node `node`."""

    node: int
    slot: int


@dataclass(frozen=True)
class Node:
    """One node: its id, class and inputs."""

    id: int
    type: str
    inputs: tuple[tuple[str, object], ...]  # (name, a Link or a widget value), in INPUT_TYPES order


class Graph:
    """Nodes added in execution order, each input a widget value or a link to an earlier node's output."""

    def __init__(self):
        self.nodes: list[Node] = []

    def add(self, type_: str, **inputs) -> tuple[Link, ...]:
        """Add a node; returns a Link per output."""
        node = Node(len(self.nodes) + 1, type_, tuple(inputs.items()))
        self.nodes.append(node)
        return tuple(Link(node.id, slot) for slot in range(len(OUTPUTS[type_])))

    def link_type(self, link: Link) -> str:
        return OUTPUTS[self.nodes[link.node - 1].type][link.slot]


def stop_at_clip_layer(info: Infotext) -> int | None:
    """CLIPSetLastLayer's value for the cell's clip skip, or None when ComfyUI's default is the same layer.

    SD1.x: A1111's clip skip N is the N-th hidden state from the end, ComfyUI's -N. SDXL: ComfyUI (as
    diffusers) reads the penultimate layer by default, and our clip skip N > 1 (engine.py) reads N - 1
    layers beyond it, ComfyUI's -(N + 1)."""
    if info.clip_skip <= 1:
        return None
    return -(info.clip_skip + 1) if info.arch == "sdxl" else -info.clip_skip


def build_graph(info: Infotext, filename_prefix: str = "ComfyUI") -> Graph:
    """The txt2img graph that samples the cell `info` describes."""
    if info.model_file is None:
        raise ValueError("a ComfyUI graph needs the checkpoint file to load (Infotext.model_file)")
    spec = resolve_sampler(info.sampler)
    g = Graph()
    model, clip, vae = g.add("CheckpointLoaderSimple", ckpt_name=info.model_file)
    if info.unet_file is not None:
        model, = g.add("UNETLoader", unet_name=info.unet_file, weight_dtype="default")
    for lora in info.loras:
        model, clip = g.add("LoraLoader", model=model, clip=clip, lora_name=lora.file_name,
                            strength_model=lora.strength, strength_clip=lora.strength)
    layer = stop_at_clip_layer(info)
    if layer is not None:
        clip, = g.add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=layer)
    positive, = g.add("CLIPTextEncode", text=info.prompt, clip=clip)
    negative, = g.add("CLIPTextEncode", text=info.negative, clip=clip)
    if info.arch == "sdxl" and not info.negative:
        # diffusers' SDXL pipelines zero an empty negative (force_zeros_for_empty_prompt), as this node does.
        negative, = g.add("ConditioningZeroOut", conditioning=negative)
    latent, = g.add("EmptyLatentImage", width=info.width, height=info.height, batch_size=1)
    samples, = g.add("KSampler", model=model, seed=info.seed, steps=info.steps, cfg=float(info.cfg),
                     sampler_name=spec.comfy_sampler, scheduler=spec.comfy_scheduler, positive=positive,
                     negative=negative, latent_image=latent, denoise=1.0)
    image, = g.add("VAEDecode", samples=samples, vae=vae)
    g.add("SaveImage", images=image, filename_prefix=filename_prefix)
    return g


def api_prompt(graph: Graph) -> dict:
    """The API format ComfyUI queues and writes as `prompt`: node id -> class_type and inputs."""
    return {str(node.id): {"inputs": {name: [str(v.node), v.slot] if isinstance(v, Link) else v
                                      for name, v in node.inputs},
                           "class_type": node.type}
            for node in graph.nodes}


def ui_workflow(graph: Graph) -> dict:
    """The editor (litegraph) format ComfyUI writes as `workflow`: nodes with their linked inputs, outputs and
    widget values in widget order, and links `[id, from node, from slot, to node, to input slot, type]`."""
    links = []
    for node in graph.nodes:
        linked = [v for _, v in node.inputs if isinstance(v, Link)]
        links += [[len(links) + i + 1, v.node, v.slot, node.id, i, graph.link_type(v)] for i, v in enumerate(linked)]
    column: dict[int, int] = {}
    per_column: dict[int, int] = {}
    nodes = []
    for order, node in enumerate(graph.nodes):
        incoming = [link for link in links if link[3] == node.id]
        column[node.id] = 1 + max((column[link[1]] for link in incoming), default=-1)
        row = per_column[column[node.id]] = per_column.get(column[node.id], -1) + 1
        linked = [name for name, value in node.inputs if isinstance(value, Link)]
        widgets = []
        for name, value in node.inputs:
            if not isinstance(value, Link):
                widgets += [value, SEED_CONTROL] if name == "seed" else [value]
        entry = {
            "id": node.id, "type": node.type,
            "pos": [40 + 380 * column[node.id], 60 + 240 * row], "size": [340, 200 if widgets else 60],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": link[5], "link": link[0]} for name, link in zip(linked, incoming)],
            "outputs": [{"name": kind, "type": kind, "slot_index": slot,
                         "links": [link[0] for link in links if (link[1], link[2]) == (node.id, slot)]}
                        for slot, kind in enumerate(OUTPUTS[node.type])],
            "properties": {"Node name for S&R": node.type},
        }
        if widgets:
            entry["widgets_values"] = widgets
        nodes.append(entry)
    return {"last_node_id": len(graph.nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def comfy_chunks(info: Infotext) -> dict[str, str]:
    """The `prompt` and `workflow` PNG text chunks, in the order and encoding ComfyUI's SaveImage uses."""
    graph = build_graph(info)
    return {"prompt": json.dumps(api_prompt(graph)), "workflow": json.dumps(ui_workflow(graph))}
