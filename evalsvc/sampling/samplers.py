"""Sampler names users write (A1111, kohya, OneTrainer) mapped to diffusers schedulers.

One table, one entry per deployment sampler; every alias resolves to a canonical name that
goes into work keys, so `euler_a`, `k_euler_a`, `Euler a` and OneTrainer's `EULER_A` are the
same cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InputError


@dataclass(frozen=True)
class SamplerSpec:
    """A diffusers scheduler configuration and how A1111 (infotext) and ComfyUI (KSampler) name it."""

    name: str
    scheduler: str
    a1111_name: str
    schedule_type: str = "Automatic"
    comfy_sampler: str = ""  # a KSAMPLER_NAMES / SAMPLER_NAMES value of ComfyUI's comfy/samplers.py
    comfy_scheduler: str = "normal"  # a SCHEDULER_NAMES value of the same file
    options: dict = field(default_factory=dict)


def _spec(name, scheduler, a1111_name, schedule_type="Automatic", comfy=None, comfy_scheduler=None,
          **options) -> SamplerSpec:
    """`comfy` is ComfyUI's sampler name (default: ours); its scheduler, unless given, is `karras` for the
    Karras schedule and `normal` otherwise."""
    comfy_scheduler = comfy_scheduler or ("karras" if schedule_type == "Karras" else "normal")
    return SamplerSpec(name, scheduler, a1111_name, schedule_type, comfy or name, comfy_scheduler, options)


_KARRAS = {"use_karras_sigmas": True}

SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        _spec("euler", "EulerDiscreteScheduler", "Euler"),
        _spec("euler_karras", "EulerDiscreteScheduler", "Euler", "Karras", "euler", **_KARRAS),
        _spec("euler_a", "EulerAncestralDiscreteScheduler", "Euler a", comfy="euler_ancestral"),
        _spec("heun", "HeunDiscreteScheduler", "Heun"),
        _spec("heun_karras", "HeunDiscreteScheduler", "Heun", "Karras", "heun", **_KARRAS),
        _spec("dpm_2", "KDPM2DiscreteScheduler", "DPM2"),
        _spec("dpm_2_karras", "KDPM2DiscreteScheduler", "DPM2", "Karras", "dpm_2", **_KARRAS),
        _spec("dpm_2_a", "KDPM2AncestralDiscreteScheduler", "DPM2 a", comfy="dpm_2_ancestral"),
        _spec("dpm_2_a_karras", "KDPM2AncestralDiscreteScheduler", "DPM2 a", "Karras", "dpm_2_ancestral",
              **_KARRAS),
        _spec("lms", "LMSDiscreteScheduler", "LMS"),
        _spec("lms_karras", "LMSDiscreteScheduler", "LMS", "Karras", "lms", **_KARRAS),
        _spec("ddim", "DDIMScheduler", "DDIM", comfy_scheduler="ddim_uniform"),
        # ComfyUI has no PLMS; iPNDM is the same linear multistep with lower-order first steps (nearest).
        _spec("pndm", "PNDMScheduler", "PLMS", comfy="ipndm", skip_prk_steps=True),
        _spec("dpmpp_2m", "DPMSolverMultistepScheduler", "DPM++ 2M", algorithm_type="dpmsolver++"),
        _spec("dpmpp_2m_karras", "DPMSolverMultistepScheduler", "DPM++ 2M", "Karras", "dpmpp_2m",
              algorithm_type="dpmsolver++", **_KARRAS),
        _spec("dpmpp_2m_sde", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", algorithm_type="sde-dpmsolver++"),
        _spec("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", "Karras", "dpmpp_2m_sde",
              algorithm_type="sde-dpmsolver++", **_KARRAS),
        # ComfyUI has no noise-prediction DPM-Solver multistep; its data-prediction form is the nearest.
        _spec("dpmsolver", "DPMSolverMultistepScheduler", "DPM2M", comfy="dpmpp_2m", algorithm_type="dpmsolver",
              final_sigmas_type="sigma_min"),
        _spec("dpmpp_sde", "DPMSolverSinglestepScheduler", "DPM++ SDE"),
        _spec("dpmpp_sde_karras", "DPMSolverSinglestepScheduler", "DPM++ SDE", "Karras", "dpmpp_sde", **_KARRAS),
        # diffusers' UniPC defaults to the bh2 solver; ComfyUI's plain `uni_pc` is bh1.
        _spec("unipc", "UniPCMultistepScheduler", "UniPC", comfy="uni_pc_bh2"),
        _spec("unipc_karras", "UniPCMultistepScheduler", "UniPC", "Karras", "uni_pc_bh2", **_KARRAS),
    )
}

# Names other tools write, normalised (lower case, `+` as `p`, separators as `_`).
_ALIASES = {
    "euler_ancestral": "euler_a",
    "dpm2": "dpm_2",
    "dpm2_a": "dpm_2_a",
    "dpm2_karras": "dpm_2_karras",
    "dpm2_a_karras": "dpm_2_a_karras",
    "plms": "pndm",
    "dpmsolverpp": "dpmpp_2m",  # kohya `dpmsolver++`
    "dpmpp": "dpmpp_2m",  # OneTrainer DPMPP
    "dpmpp_karras": "dpmpp_2m_karras",  # OneTrainer DPMPP_KARRAS
    "dpmsingle": "dpmpp_sde",
    "dpmpp_sde": "dpmpp_sde",
}


def _normalise(name: str) -> str:
    s = name.strip().lower().replace("++", "pp").replace("+", "p")
    s = re.sub(r"[\s\-./]+", "_", s)
    if s.startswith("k_"):
        s = s[2:]
    return s


def resolve_sampler(name: str) -> SamplerSpec:
    """The spec for any accepted spelling; unknown names are refused with the list of choices."""
    key = _normalise(name)
    key = _ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; choose one of: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[key]


def make_scheduler(spec: SamplerSpec, base_config):
    """A fresh scheduler of `spec`'s class built from the pipeline's own scheduler config."""
    import diffusers

    cls = getattr(diffusers, spec.scheduler)
    return cls.from_config(base_config, **spec.options)
