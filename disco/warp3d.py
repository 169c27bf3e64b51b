"""The 3D animation step: move a pinhole camera through a depth map and resample the frame.

Coordinates (those of ``grid_sample``): ``u`` runs left to right and ``v`` top to bottom, both
in [-1, 1] across the picture (pixel centres at ``(2i + 1) / W - 1``), and the camera looks along
``+Z``. The camera's vertical field of view is ``fov`` degrees; with ``f = 1 / tan(fov / 2)`` and
``a = W / H``, a camera-space point ``(X, Y, Z)`` lands on the picture at::

    u = f * X / (a * Z),    v = f * Y / Z

so pixels are square whatever the frame's shape. A pixel ``(u, v)`` with depth ``D`` unprojects
to ``(a * u * D / f, v * D / f, D)``. The camera's move is the notebook's: a point ``p`` (a row
vector) in the old camera is ``p @ R + T`` in the new one, where ``R`` is the rotation matrix of the
three angles composed as ``R = Rx @ Ry @ Rz`` and ``T`` the translation
(:func:`camera_motion` makes both from the user's numbers, with the notebook's
``TRANSLATION_SCALE = 1/200`` and its signs: ``T = (-x, +y, -z) / 200``, so a positive
``translation_z`` moves the camera forward and zooms in).

Each old pixel ``q`` thus lands at ``g(q)`` in the new frame. The new frame at ``p`` shows the
old frame at the ``q`` with ``g(q) = p``, found by the fixed-point iteration
``q <- q + (p - g(q))`` from ``q = p`` (the depth is read at ``q`` each time). One iteration is
the notebook's own scheme (it samples at ``p - (g(p) - p)``); a few more make rotations and
zooms exact (a pure rotation ``R`` about the view axis converges as ``(2 sin(angle / 2))^k``).

Two differences from the notebook, both deliberate: the notebook unprojects a pixel to
``(u, v, D)`` instead of onto its ray, which scales its rotations and zooms by ``f / D`` (its
sideways translations are the same as here), and it normalises ``u`` and ``v`` to [-1, 1]
without the aspect ratio (pixels are stretched on non-square frames). ``near_plane`` and
``far_plane`` set only the clip-space depth of the notebook's camera, which its warp (like this
one) discards: they are checked and otherwise change nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TRANSLATION_SCALE = 1.0 / 200.0  # the notebook's scale from the user's numbers to depth units
PADDING_MODES = ("border", "reflection", "zeros")
SAMPLING_MODES = ("bicubic", "bilinear", "nearest")
MIN_DEPTH = 1e-3  # a point that comes closer to the camera than this is held there (no division by 0)


def rotation_matrix(x_degrees: float, y_degrees: float, z_degrees: float) -> torch.Tensor:
    """The rotation matrix of the notebook's ``euler_angles_to_matrix(radians, "XYZ")``: ``Rx @ Ry @ Rz``.

    Each axis matrix is the right-handed rotation by its angle in degrees (``Rz = [[c, -s, 0],
    [s, c, 0], [0, 0, 1]]``). Returns a (3, 3) float64 tensor."""
    cx, sx = math.cos(math.radians(x_degrees)), math.sin(math.radians(x_degrees))
    cy, sy = math.cos(math.radians(y_degrees)), math.sin(math.radians(y_degrees))
    cz, sz = math.cos(math.radians(z_degrees)), math.sin(math.radians(z_degrees))
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return rx @ ry @ rz


def camera_motion(
    translation_x: float = 0.0,
    translation_y: float = 0.0,
    translation_z: float = 0.0,
    rotation_3d_x: float = 0.0,
    rotation_3d_y: float = 0.0,
    rotation_3d_z: float = 0.0,
) -> tuple[tuple[float, float, float], torch.Tensor]:
    """The camera move of one frame from the notebook's settings (translations in its units,
    rotations in degrees): ``(T, R)`` for :func:`warp_3d`, with ``T = (-x, y, -z) / 200``."""
    translation = (
        -translation_x * TRANSLATION_SCALE,
        translation_y * TRANSLATION_SCALE,
        -translation_z * TRANSLATION_SCALE,
    )
    return translation, rotation_matrix(rotation_3d_x, rotation_3d_y, rotation_3d_z)


def pixel_grid(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """The ``grid_sample`` coordinates of the pixel centres: (H, W, 2) as ``(u, v)``."""
    v = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    u = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack((uu, vv), dim=-1)


def _check(depth: torch.Tensor, image: torch.Tensor, near: float, far: float, fov: float, pad: str, mode: str) -> None:
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, H, W); got {tuple(image.shape)}")
    if depth.shape != image.shape[-2:]:
        raise ValueError(f"depth must be (H, W) = {tuple(image.shape[-2:])}; got {tuple(depth.shape)}")
    if not 0 < near < far:
        raise ValueError(f"near_plane and far_plane must satisfy 0 < near < far; got {near}, {far}")
    if not 0 < fov < 180:
        raise ValueError(f"fov must be in (0, 180) degrees; got {fov}")
    if pad not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {pad!r}")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling_mode must be one of {SAMPLING_MODES}; got {mode!r}")


def project_move(
    grid: torch.Tensor,
    depth: torch.Tensor,
    translation: tuple[float, float, float],
    rotation: torch.Tensor,
    fov: float,
    aspect: float,
) -> torch.Tensor:
    """Where old pixels land after the camera's move: ``g(q)`` of the module's notes.

    ``grid``: (..., 2) old positions ``(u, v)``; ``depth``: (...) their depths. Returns (..., 2)."""
    f = 1.0 / math.tan(math.radians(fov) / 2)
    z = depth
    points = torch.stack((grid[..., 0] * aspect * z / f, grid[..., 1] * z / f, z), dim=-1)
    r = rotation.to(points)
    t = torch.as_tensor(translation, dtype=points.dtype, device=points.device)
    moved = points @ r + t
    z_new = moved[..., 2].clamp(min=MIN_DEPTH)
    return torch.stack((f * moved[..., 0] / (aspect * z_new), f * moved[..., 1] / z_new), dim=-1)


def sampling_grid(
    depth: torch.Tensor,
    translation: tuple[float, float, float],
    rotation: torch.Tensor,
    fov: float = 40.0,
    iterations: int = 8,
) -> torch.Tensor:
    """For each new pixel, where to read the old frame: (1, H, W, 2) ``grid_sample`` coordinates.

    ``depth``: (H, W), the old frame's depth in the depth model's units. ``iterations``: steps
    of the fixed-point inversion (1 is the notebook's scheme). Raises ValueError for
    ``iterations < 1``."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1; got {iterations}")
    height, width = depth.shape
    aspect = width / height
    depth = depth.float()
    target = pixel_grid(height, width, depth.device)
    depth_image = depth[None, None]
    source = target.clone()
    for _ in range(iterations):
        # the old depth at the current guess (border: a guess off the frame keeps the edge's depth)
        at = F.grid_sample(depth_image, source[None], mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
        source = source + (target - project_move(source, at, translation, rotation, fov, aspect))
    return source[None]


def warp_3d(
    image: torch.Tensor,
    depth: torch.Tensor,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotation: torch.Tensor | None = None,
    near_plane: float = 200.0,
    far_plane: float = 10000.0,
    fov: float = 40.0,
    padding_mode: str = "border",
    sampling_mode: str = "bicubic",
    iterations: int = 8,
) -> torch.Tensor:
    """The frame as the moved camera sees it (see the module's notes for the camera model).

    ``image``: (1, C, H, W) in [-1, 1]; ``depth``: (H, W), the notebook's depth units (larger is
    farther); ``translation``/``rotation``: the camera's move, as :func:`camera_motion` makes it
    (``rotation`` None: no rotation); ``fov``: vertical field of view in degrees;
    ``padding_mode``: ``border``, ``reflection`` or ``zeros`` (what is seen past the frame's edge);
    ``sampling_mode``: ``bicubic``, ``bilinear`` or ``nearest``. Returns (1, C, H, W) in [-1, 1]
    on ``image``'s device and dtype. Raises ValueError for shapes or settings out of range."""
    _check(depth, image, near_plane, far_plane, fov, padding_mode, sampling_mode)
    rotation = torch.eye(3, dtype=torch.float64) if rotation is None else rotation
    grid = sampling_grid(depth.to(image.device), translation, rotation, fov, iterations)
    warped = F.grid_sample(
        image.float(), grid, mode=sampling_mode, padding_mode=padding_mode, align_corners=False
    )  # bicubic overshoots a little: clamp back to the image range
    return warped.clamp(-1, 1).to(image.dtype)


EYES = ("l", "r")  # the notebook's file name ends: frame_NNNN_l.png (left), frame_NNNN_r.png (right)
FISHEYE = 0.4  # the notebook's spherical projection: magnitude -0.4 about the centre


def eye_motion(eye: str, vr_eye_angle: float, vr_ipd: float) -> tuple[tuple[float, float, float], torch.Tensor]:
    """The camera move to one eye of a VR pair, as the notebook's ``generate_eye_views`` makes it:
    the eye sits ``cos(angle) * vr_ipd / 2`` to the side (left: ``translation_x`` negative, right:
    positive, in ``translation_x``'s units) and turns ``vr_eye_angle`` degrees about the y axis
    towards the centre (left ``+angle``, right ``-angle``). Returns ``(T, R)`` for :func:`warp_3d`.
    Raises ValueError for an ``eye`` other than ``l`` and ``r``."""
    if eye not in EYES:
        raise ValueError(f"eye must be 'l' or 'r'; got {eye!r}")
    side = -1.0 if eye == "l" else 1.0
    offset = math.cos(math.radians(vr_eye_angle)) * vr_ipd / 2 * side
    return camera_motion(translation_x=offset, rotation_3d_y=-side * vr_eye_angle)


def fisheye(image: torch.Tensor, magnitude: float = FISHEYE) -> torch.Tensor:
    """``image`` (1, C, H, W) in [-1, 1] through the notebook's spherical projection: the pixel at
    ``p`` (``grid_sample`` coordinates) shows the picture at ``p * (1 + magnitude * |p|)``, so the
    centre keeps its scale and the edges draw in more of the picture; what falls past the edge is
    black, as in the notebook. Returns (1, C, H, W) in [-1, 1]."""
    height, width = image.shape[-2:]
    grid = pixel_grid(height, width, image.device)
    radius = grid.norm(dim=-1, keepdim=True)
    source = grid * (1 + magnitude * radius)
    lifted = image.float().add(1)  # black (-1) is 0 here: the zeros past the edge are black
    seen = F.grid_sample(lifted, source[None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return seen.sub(1).clamp(-1, 1).to(image.dtype)


def eye_view(
    image: torch.Tensor,
    depth: torch.Tensor,
    eye: str,
    vr_eye_angle: float = 0.5,
    vr_ipd: float = 5.0,
    fov: float = 40.0,
    padding_mode: str = "border",
    sampling_mode: str = "bicubic",
    spherical: bool = True,
) -> torch.Tensor:
    """One eye's view of a frame for VR (the notebook's ``vr_mode``): ``image`` (1, C, H, W) in
    [-1, 1] with its ``depth`` (H, W) seen from the eye's camera (:func:`eye_motion`) by
    :func:`warp_3d`, then, with ``spherical``, through the fish-eye projection (:func:`fisheye`).
    Returns (1, C, H, W) in [-1, 1]."""
    translation, rotation = eye_motion(eye, vr_eye_angle, vr_ipd)
    view = warp_3d(image, depth, translation, rotation, fov=fov, padding_mode=padding_mode, sampling_mode=sampling_mode)
    return fisheye(view) if spherical else view
