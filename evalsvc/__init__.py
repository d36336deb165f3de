"""evalsvc: evaluate Stable Diffusion finetune and LoRA checkpoints with evidence."""

__version__ = "0.1.0"
