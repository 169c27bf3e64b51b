"""Cut schedules per diffusion model: the notebook's presets for KaliYuga's models.

The Disco Diffusion notebook (v5.7, "Extra Settings", cutn scheduling) replaces ``cut_overview``,
``cut_innercut``, ``cut_ic_pow`` and ``cut_icgray_p`` with schedules of their own when
``diffusion_model`` is one of KaliYuga's pixel-art or pulp sci-fi models (``pad_or_pulp``) or one
of the watercolor models (``watercolor``). discoart names the same sets ``cut_schedules_group``
(its ``cut-schedules.yml``: ``default``, ``pad_or_pulp``, ``watercolor``). Here a cut setting left
out (None) or left at its default (PaddleHub's module's, the ``default`` group's: ``generate_image``
keeps the module's defaults) takes its value from the group: ``cut_schedules_group`` when it names
one, else the model's own (``model_cut_group``); a cut setting given another value always wins, and
``cut_schedules_group="default"`` keeps the module's schedules on any model. No torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AUTO_GROUP", "CUT_SCHEDULE_GROUPS", "CUT_SETTINGS", "PAD_OR_PULP_MODELS", "WATERCOLOR_MODELS", "cut_group",
    "cut_schedules", "model_cut_group",
]  # fmt: skip

CUT_SETTINGS = ("cut_overview", "cut_innercut", "cut_ic_pow", "cut_icgray_p")
AUTO_GROUP = "auto"  # cut_schedules_group's default: the diffusion model's own group

# The notebook's kaliyuga_pixel_art_model_names and kaliyuga_pulpscifi_model_names (one preset for both)
PAD_OR_PULP_MODELS = (
    "pixelartdiffusion_expanded", "pixel_art_diffusion_hard_256", "pixel_art_diffusion_soft_256",
    "pixelartdiffusion4k", "PulpSciFiDiffusion",
)  # fmt: skip
WATERCOLOR_MODELS = ("watercolordiffusion", "watercolordiffusion_2")  # kaliyuga_watercolor_model_names

# The notebook's schedules (its pad_or_pulp_cut_* and watercolor_cut_* parameters; its defaults for "default")
CUT_SCHEDULE_GROUPS: dict[str, dict[str, Any]] = {
    "default": {
        "cut_overview": "[12]*400+[4]*600",
        "cut_innercut": "[4]*400+[12]*600",
        "cut_ic_pow": 1.0,
        "cut_icgray_p": "[0.2]*400+[0]*600",
    },
    "pad_or_pulp": {
        "cut_overview": "[15]*100+[15]*100+[12]*100+[12]*100+[6]*100+[4]*100+[2]*200+[0]*200",
        "cut_innercut": "[1]*100+[1]*100+[4]*100+[4]*100+[8]*100+[8]*100+[10]*200+[10]*200",
        "cut_ic_pow": "[12]*300+[12]*100+[12]*50+[12]*50+[10]*100+[10]*100+[10]*300",
        "cut_icgray_p": "[0.87]*100+[0.78]*50+[0.73]*50+[0.64]*60+[0.56]*40+[0.50]*50+[0.33]*100+[0.19]*150+[0]*400",
    },
    "watercolor": {
        "cut_overview": "[14]*200+[12]*200+[4]*400+[0]*200",
        "cut_innercut": "[2]*200+[4]*200+[12]*400+[12]*200",
        "cut_ic_pow": "[12]*300+[12]*100+[12]*50+[12]*50+[10]*100+[10]*100+[10]*300",
        "cut_icgray_p": "[0.7]*100+[0.6]*100+[0.45]*100+[0.3]*100+[0]*600",
    },
}


def model_cut_group(diffusion_model: str) -> str:
    """The cut-schedule group the notebook switches to for ``diffusion_model``: ``pad_or_pulp``
    for KaliYuga's pixel-art and pulp sci-fi models, ``watercolor`` for the watercolor ones, else
    ``default`` (a checkpoint path is ``default`` too)."""
    if diffusion_model in PAD_OR_PULP_MODELS:
        return "pad_or_pulp"
    if diffusion_model in WATERCOLOR_MODELS:
        return "watercolor"
    return "default"


def cut_group(cut_schedules_group: str, diffusion_model: str) -> str:
    """The group that fills the cut settings left out: ``cut_schedules_group`` unless it is
    ``auto``, then the model's own (``model_cut_group``)."""
    return model_cut_group(diffusion_model) if cut_schedules_group == AUTO_GROUP else cut_schedules_group


def cut_schedules(values: Mapping[str, Any]) -> dict[str, Any]:
    """The four cut settings of ``values`` (settings by name, or ``Settings`` as a mapping of its
    fields), each one left out, None or at its default taken from the group (``cut_group`` of its
    ``cut_schedules_group``, default ``auto``, and ``diffusion_model``). Raises ``KeyError`` for a
    group that is not in ``CUT_SCHEDULE_GROUPS`` (the validator refuses such a name first)."""
    group = CUT_SCHEDULE_GROUPS[
        cut_group(values.get("cut_schedules_group") or AUTO_GROUP, values.get("diffusion_model") or "")
    ]
    defaults = CUT_SCHEDULE_GROUPS["default"]
    return {
        name: group[name] if values.get(name) is None or _same(values[name], defaults[name]) else values[name]
        for name in CUT_SETTINGS
    }


def _same(value: Any, default: Any) -> bool:
    """Whether a cut setting's value is its default (text compared without spaces, numbers as numbers)."""
    if isinstance(value, str) and isinstance(default, str):
        return value.replace(" ", "") == default.replace(" ", "")
    return not isinstance(value, str | bool) and not isinstance(default, str) and value == default
