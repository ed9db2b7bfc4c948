"""The patching each encoder's authors extract at: magnification and patch side (px), torch-free.

For the workflow (``rules/common.smk`` reads it while it builds the DAG, so it imports nothing heavy)
and for :mod:`mmsurv.features.foundation`, whose encoder specifications take their values from here.
When a cohort's ``patching.magnification`` / ``patching.patch_size`` are not set (``null``), its
encoder's preset fills them; what was used is recorded in every patch file's ``coords`` attributes
and in the patching summary.
"""

from __future__ import annotations

from typing import NamedTuple


class PatchPreset(NamedTuple):
    magnification: float  # objective power of the patches (20 = 0.5 µm/px)
    patch_size: int       # patch side in pixels at that magnification


ENCODER_PRESETS: dict[str, PatchPreset] = {
    "resnet50_trunc": PatchPreset(20, 512),   # the founding papers (CLAM/MCAT features: 512 px at 20×, resized to 224)
    "uni": PatchPreset(20, 256),              # UNI: 256 px at 20× resized to 224
    "uni2_h": PatchPreset(20, 256),
    "conch_v1": PatchPreset(20, 512),         # CONCH: 512 px at 20× resized to 448
    "conch_v1_proj": PatchPreset(20, 512),
    "virchow2": PatchPreset(20, 224),
    "h_optimus_0": PatchPreset(20, 224),
    "gigapath": PatchPreset(20, 256),         # 256 px at 20×, centre 224 px crop
    "phikon_v2": PatchPreset(20, 224),
    "ctranspath": PatchPreset(20, 224),
}


def encoder_preset(encoder: str) -> PatchPreset:
    """The patching ``encoder``'s authors use (a registered encoder without one: the founding papers')."""
    return ENCODER_PRESETS.get(encoder, ENCODER_PRESETS["resnet50_trunc"])


def patching_for(patching: dict, encoder: str) -> dict:
    """``patching`` with ``magnification`` / ``patch_size`` that are missing or null taken from
    ``encoder``'s preset (the values then used are recorded with every slide's patches)."""
    preset = encoder_preset(encoder)
    settings = dict(patching)
    for key in ("magnification", "patch_size"):
        if settings.get(key) is None:
            settings[key] = getattr(preset, key)
    return settings
