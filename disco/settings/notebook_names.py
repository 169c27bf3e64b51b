"""The Disco Diffusion notebook's settings this project does not take, each with what to use instead.

Users bring the notebook's names (from its form, or from the ``settings.txt`` it saves beside
every batch). A name this project has under another name, or that the notebook needed and this
project does not, gets a message of its own instead of "unknown setting": ``advice`` words it,
``unknown_settings_error`` refuses every unknown name of a request at once. The CLIP switches
(``ViTB32: true``, ``RN50: false``, ...) are read together: those set true become one
``clip_models`` list in the message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SettingsError
from .fields import SETTING_NAMES

__all__ = ["CLIP_SWITCHES", "NOTEBOOK_NAMES", "advice", "unknown_settings_error"]

# The notebook's CLIP switches and the clip_models name of each
CLIP_SWITCHES: dict[str, str] = {
    "ViTB32": "ViT-B-32::openai", "ViTB16": "ViT-B-16::openai", "ViTL14": "ViT-L-14::openai",
    "ViTL14_336px": "ViT-L-14-336::openai", "RN101": "RN101::openai", "RN50": "RN50::openai",
    "RN50x4": "RN50x4::openai", "RN50x16": "RN50x16::openai", "RN50x64": "RN50x64::openai",
    # v5.7's OpenCLIP switches, spelled as the notebook spells them, and the model each one builds there
    "ViTB32_laion2b_e16": "ViT-B-32::laion2b_e16", "ViTB32_laion400m_e31": "ViT-B-32::laion400m_e31",
    "ViTB32_laion400m_32": "ViT-B-32::laion400m_e32",
    "ViTB32quickgelu_laion400m_e31": "ViT-B-32-quickgelu::laion400m_e31",
    "ViTB32quickgelu_laion400m_e32": "ViT-B-32-quickgelu::laion400m_e32",
    "ViTB16_laion400m_e31": "ViT-B-16::laion400m_e31", "ViTB16_laion400m_e32": "ViT-B-16::laion400m_e32",
    "RN50_yffcc15m": "RN50::yfcc15m", "RN50_cc12m": "RN50::cc12m",
    "RN50_quickgelu_yfcc15m": "RN50-quickgelu::yfcc15m", "RN50_quickgelu_cc12m": "RN50-quickgelu::cc12m",
    "RN101_yfcc15m": "RN101::yfcc15m", "RN101_quickgelu_yfcc15m": "RN101-quickgelu::yfcc15m",
}  # fmt: skip

_ONE_SIZE = "use width_height [width, height] (one size setting serves every diffusion model)"
_SAVES = (
    "not needed: intermediate_saves always go to the folder partials in output_dir (the frames every display_rate "
    "steps come back with the image); use intermediate_saves"
)
# name -> what to use instead, or why it is not needed (the CLIP switches and width/height are worded in advice())
NOTEBOOK_NAMES: dict[str, str] = {
    "set_seed": "use seed (a whole number; leave it out for a random seed, which is reported)",
    "width_height_for_512x512_models": _ONE_SIZE,
    "width_height_for_256x256_models": _ONE_SIZE,
    "intermediates_in_subfolder": _SAVES,
    "steps_per_checkpoint": _SAVES,
    "interp_spline": "not offered: key frames are interpolated linearly (the notebook's own advice); leave it out",
    "persistent_frame_output_in_batch_folder": "not needed: an animation's frames are always written to output_dir",
    "run_to_resume": "use resume_run true (it continues the latest run of batch_name in output_dir, or that of seed)",
    "retain_overwritten_frames": "not offered: leave it out (resume_from_frame says which frames are kept)",
    "use_checkpoint": "not needed: the UNet's memory use is managed here; leave it out",
    "check_model_SHA": "not needed: every model file is checked against its sha256 when it is downloaded",
    "custom_path": "use diffusion_model with the checkpoint file's path",
    "useCPU": "use use_gpu false",
    "skip_video_for_run_all": "not needed: an animation's MP4 is always made",
    "diffusion_steps": "not needed: it follows from steps; give steps",
    "timestep_respacing": "not needed: it follows from steps; give steps",
}


def advice(name: str, values: Mapping[str, Any] | None = None) -> str:
    """What to say about setting ``name`` that this project does not take: the notebook's own
    advice (``NOTEBOOK_NAMES``), the ``clip_models`` list that the CLIP switches set true in
    ``values`` make, ``width_height`` from ``width`` and ``height``, or the nearest known name."""
    values = values or {}
    if name in CLIP_SWITCHES:
        chosen = [CLIP_SWITCHES[k] for k in CLIP_SWITCHES if _true(values.get(k))]
        shown = chosen or [CLIP_SWITCHES[name]]
        return f"the notebook's CLIP switches are one setting here: use clip_models {shown}"
    if name in ("width", "height"):
        size = [values.get("width", "WIDTH"), values.get("height", "HEIGHT")]
        return f"use width_height [{size[0]}, {size[1]}]"
    if name in NOTEBOOK_NAMES:
        return NOTEBOOK_NAMES[name]
    close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
    return "unknown setting" + (f"; did you mean {close[0]!r}?" if close else "")


def unknown_settings_error(
    names: Iterable[Any], values: Mapping[str, Any] | None = None, *, prefix: str = "", known: str | None = None
) -> SettingsError:
    """The refusal of every name in ``names`` (settings this project does not take) at once, each
    with its ``advice``; one name alone that is not the notebook's also says where the known
    settings are (``known``; default: it lists them). ``prefix`` goes before each name shown
    (``"--"`` on the command line)."""
    names = [str(n) if str(n).isidentifier() else repr(n) for n in names]
    if len(names) == 1:
        message = advice(names[0], values)
        if message.startswith("unknown setting"):
            message += f" {known or 'Known settings: ' + ', '.join(SETTING_NAMES)}"
        return SettingsError(prefix + names[0], message)
    grouped: dict[str, list[str]] = {}  # names with the same advice (the CLIP switches, width and height) together
    for name in names:
        grouped.setdefault(advice(name, values), []).append(prefix + name)
    listed = "; ".join(f"{', '.join(group)}: {words}" for words, group in grouped.items())
    shown = ", ".join(prefix + name for name in names)
    return SettingsError(shown, f"{len(names)} settings this project does not take: {listed}")


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"))
