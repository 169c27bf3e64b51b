"""The settings' constants and the help texts that word what each one allows."""

from __future__ import annotations

from ..models import DIFFUSION_MODELS as MODELS

LIGHTHOUSE = (
    "A beautiful painting of a singular lighthouse, shining its light across a tumultuous sea of blood "
    "by greg rutkowski and thomas kinkade, Trending on artstation."
)
DIFFUSION_MODELS = tuple(MODELS)  # the registry's models (disco/models.py), the default first
CHECKPOINT_ALLOWED = (
    "the path of your own checkpoint (.pt) of one of their UNet layouts: inside the server's model directory, "
    "or anywhere on this machine for the Flow the client starts itself"
)
PERLIN_MODES = ("mixed", "colored", "gray")
PERLIN_ALIASES = {"mix": "mixed", "color": "colored", "grey": "gray"}
SAMPLING_MODES = ("ddim", "plms")
ANIMATION_MODES = ("None", "2D", "3D", "Video Input")
MIDAS_DEPTH_MODELS = ("dpt_large",)  # the notebook v5.7's one MiDaS model
PADDING_MODES = ("border", "reflection", "zeros")  # the 3D warp's grid_sample modes (disco.warp3d)
WARP_SAMPLING_MODES = ("bicubic", "bilinear", "nearest")
VIDEO_BLEND_MODES = ("None", "linear", "optical flow")  # the notebook's video_init_blend_mode
MAX_FRAMES = 10000  # frame numbers in file names have four digits
SCHEDULE_LENGTH = 1000  # schedules are read over 1000 "virtual" steps
MAX_STEPS = 1000
MAX_BATCHES = 1000
MAX_TRANSFORMATIONS = 100

SCHEDULE = "a schedule over 1000 steps such as [12]*400+[4]*600"
PERCENTAGE_ALLOWED = "a percentage from 0% to 99% that leaves at least one step"
SCALE_ALLOWED = "a number, or numbers as a schedule over 1000 steps such as [5000]*500+[2000]*500"
KEYFRAMES = (
    "key frames 'frame: (value), ...' (e.g. '0: (1), 10: (1.05)'), linear in between; a value may use t, the "
    "frame number: numbers, t, pi, e, + - * / % **, parentheses and sin cos tan asin acos atan sinh cosh tanh "
    "exp log log10 sqrt abs floor ceil min max"
)
# A file name may have 255 bytes; the longest one around a batch name takes 55 more of them:
# reverse_diffusion-{batch_name}-{seed}-run{N}_{i}-step{NNNN}.png
BATCH_NAME_BYTES = 200
BATCH_NAME_ALLOWED = (
    f"up to 100 characters and {BATCH_NAME_BYTES} bytes of UTF-8: letters and digits of any script (with their "
    "accents), spaces and _ . ( ) -, not starting with '.' and not a Windows device name (CON, PRN, AUX, NUL, "
    "COM1-9, LPT1-9)"
)
