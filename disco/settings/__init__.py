"""Every generation setting: its default, type, range and validation.

One concept per module, in the order they build on each other:

- ``disco.errors``: ``SettingsError``, the server's ``Limits`` and the refusal of numbers that are
  not finite (kept outside this package: the prompt and key-frame readers below it raise them too);
- ``texts``: constants and the help texts that word what is allowed;
- ``scalars``: readers of one plain value (whole number, number, true/false, choice);
- ``schedules``: the ``[12]*400+[4]*600`` grammar;
- ``yaml_io``: settings files;
- ``fields``: the ``Settings`` dataclass, the field table every other reader is driven by;
- ``coercion``: each value read into its field's type, in one loop over the fields;
- ``validation``: ``validate_settings``, the coercion plus the rules between settings;
- ``schema``: the settings in words (``describe``) and as data for a form (``settings_schema``);
- ``preview``: a setting's value over the 1000 virtual steps, read by its own reader (``preview_schedule``;
  ``preview_prompts`` for ``text_prompts`` in all its forms).

Importers use the names re-exported here.
"""

from ..errors import DEFAULT_LIMITS, Limits, SettingsError
from .coercion import coerce_settings, read_setting
from .fields import (
    GIF_MAX_FPS,
    KEYFRAME_3D_SETTINGS,
    KEYFRAME_SETTINGS,
    KINDS,
    MOTION_SETTINGS,
    SEED_API_NAMES,
    SETTING_NAMES,
    VIDEO_INIT_OVERRIDES,
    Settings,
    choice_meanings,
    choices,
    default,
    kind,
    limits_of,
    setting,
    with_video_init_overrides,
)
from .preview import (
    MAX_PREVIEW_CHARS,
    PREVIEWED_SETTINGS,
    FramePrompts,
    PromptPreview,
    SchedulePreview,
    preview_prompts,
    preview_schedule,
)
from .schedules import bool_schedule, count_schedule, number_or_schedule, parse_schedule
from .schema import describe, settings_schema
from .texts import (
    ANIMATION_MODES,
    BATCH_NAME_ALLOWED,
    BATCH_NAME_BYTES,
    CHECKPOINT_ALLOWED,
    DIFFUSION_MODELS,
    KEYFRAMES,
    LIGHTHOUSE,
    MAX_BATCHES,
    MAX_FRAMES,
    MAX_STEPS,
    MAX_TRANSFORMATIONS,
    PERLIN_ALIASES,
    PERLIN_MODES,
    SAMPLING_MODES,
    SCALE_ALLOWED,
    SCHEDULE,
    SCHEDULE_LENGTH,
)
from .validation import (
    check_gobig_start,
    check_prompt_tokens,
    frames_skip_steps,
    model_schedules,
    settings_from_yaml,
    uses_secondary_model,
    validate_settings,
)
from .yaml_io import read_yaml, write_yaml

__all__ = [
    "ANIMATION_MODES",
    "GIF_MAX_FPS",
    "KEYFRAME_3D_SETTINGS",
    "BATCH_NAME_ALLOWED",
    "BATCH_NAME_BYTES",
    "CHECKPOINT_ALLOWED",
    "DEFAULT_LIMITS",
    "DIFFUSION_MODELS",
    "KEYFRAMES",
    "KEYFRAME_SETTINGS",
    "KINDS",
    "LIGHTHOUSE",
    "MAX_BATCHES",
    "MAX_FRAMES",
    "MAX_PREVIEW_CHARS",
    "MAX_STEPS",
    "MAX_TRANSFORMATIONS",
    "MOTION_SETTINGS",
    "PERLIN_ALIASES",
    "PERLIN_MODES",
    "PREVIEWED_SETTINGS",
    "SAMPLING_MODES",
    "SCALE_ALLOWED",
    "SCHEDULE",
    "SCHEDULE_LENGTH",
    "SEED_API_NAMES",
    "SETTING_NAMES",
    "VIDEO_INIT_OVERRIDES",
    "Limits",
    "FramePrompts",
    "PromptPreview",
    "SchedulePreview",
    "Settings",
    "SettingsError",
    "bool_schedule",
    "check_gobig_start",
    "check_prompt_tokens",
    "choice_meanings",
    "choices",
    "coerce_settings",
    "count_schedule",
    "default",
    "describe",
    "frames_skip_steps",
    "kind",
    "limits_of",
    "model_schedules",
    "number_or_schedule",
    "parse_schedule",
    "preview_prompts",
    "preview_schedule",
    "read_setting",
    "read_yaml",
    "setting",
    "settings_from_yaml",
    "settings_schema",
    "uses_secondary_model",
    "validate_settings",
    "with_video_init_overrides",
    "write_yaml",
]
