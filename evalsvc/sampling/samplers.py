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
    """A diffusers scheduler configuration and how A1111 names it in infotext."""

    name: str
    scheduler: str
    a1111_name: str
    schedule_type: str = "Automatic"
    options: dict = field(default_factory=dict)


def _spec(name, scheduler, a1111_name, schedule_type="Automatic", **options) -> SamplerSpec:
    return SamplerSpec(name, scheduler, a1111_name, schedule_type, options)


_KARRAS = {"use_karras_sigmas": True}

SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        _spec("euler", "EulerDiscreteScheduler", "Euler"),
        _spec("euler_karras", "EulerDiscreteScheduler", "Euler", "Karras", **_KARRAS),
        _spec("euler_a", "EulerAncestralDiscreteScheduler", "Euler a"),
        _spec("heun", "HeunDiscreteScheduler", "Heun"),
        _spec("heun_karras", "HeunDiscreteScheduler", "Heun", "Karras", **_KARRAS),
        _spec("dpm_2", "KDPM2DiscreteScheduler", "DPM2"),
        _spec("dpm_2_karras", "KDPM2DiscreteScheduler", "DPM2", "Karras", **_KARRAS),
        _spec("dpm_2_a", "KDPM2AncestralDiscreteScheduler", "DPM2 a"),
        _spec("dpm_2_a_karras", "KDPM2AncestralDiscreteScheduler", "DPM2 a", "Karras", **_KARRAS),
        _spec("lms", "LMSDiscreteScheduler", "LMS"),
        _spec("lms_karras", "LMSDiscreteScheduler", "LMS", "Karras", **_KARRAS),
        _spec("ddim", "DDIMScheduler", "DDIM"),
        _spec("pndm", "PNDMScheduler", "PLMS", skip_prk_steps=True),
        _spec("dpmpp_2m", "DPMSolverMultistepScheduler", "DPM++ 2M", algorithm_type="dpmsolver++"),
        _spec("dpmpp_2m_karras", "DPMSolverMultistepScheduler", "DPM++ 2M", "Karras",
              algorithm_type="dpmsolver++", **_KARRAS),
        _spec("dpmpp_2m_sde", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", algorithm_type="sde-dpmsolver++"),
        _spec("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", "Karras",
              algorithm_type="sde-dpmsolver++", **_KARRAS),
        _spec("dpmsolver", "DPMSolverMultistepScheduler", "DPM2M", algorithm_type="dpmsolver",
              final_sigmas_type="sigma_min"),
        _spec("dpmpp_sde", "DPMSolverSinglestepScheduler", "DPM++ SDE"),
        _spec("dpmpp_sde_karras", "DPMSolverSinglestepScheduler", "DPM++ SDE", "Karras", **_KARRAS),
        _spec("unipc", "UniPCMultistepScheduler", "UniPC"),
        _spec("unipc_karras", "UniPCMultistepScheduler", "UniPC", "Karras", **_KARRAS),
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
