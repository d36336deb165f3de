"""Trained adapters (LoRA and the LyCORIS family) read from their files and applied to a base model's weights.

One module per algorithm; each layer type gives the change it makes to one base weight at strength 1, and the
patcher (`evalsvc.sampling.lora`) adds `strength` times that change, as A1111 and ComfyUI do.
"""
