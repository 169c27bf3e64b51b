"""Optical flow for video inits: RAFT's flow between frames, a forward-backward reliability mask,
and warping a frame along a flow with OpenCV's ``remap``.

Conventions: a flow is a (2, H, W) float32 array or tensor in pixels, ``flow[0]`` along x (to the
right) and ``flow[1]`` along y (down); ``flow_ab`` maps each pixel ``p`` of frame ``a`` to where it
is in frame ``b``, ``p + flow_ab(p)``. To bring frame ``a`` onto frame ``b`` (the notebook's step:
the previous output carried along the video) warp ``a`` with the *backward* flow ``flow_ba``:
``warped(p) = a(p + flow_ba(p))``.

The reliability mask is the classic forward-backward check (Sundaram, Brox and Keutzer, 2010): a
pixel's flow is trusted when following it and then the reverse flow from where it lands comes
back, ``|f + b'|^2 <= 0.01 * (|f|^2 + |b'|^2) + 0.5`` with ``b'`` the reverse flow sampled at
``p + f(p)``; pixels that leave the frame are not trusted. Occluded pixels (covered in the other
frame) fail it, so the mask is 0 there and 1 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .packages import opencv

RAFT_ITERATIONS = 12  # torchvision's default number of flow updates
RAFT_MIN_SIZE = 128
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_ABSOLUTE = 0.5  # pixels squared


def load_raft(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torchvision's RAFT-Large with the weights of ``path`` (``raft_large_C_T_SKHT_V2-ff5fadd5.pth``),
    loaded strictly with ``weights_only``, in eval mode on ``device``. Raises ValueError if the file
    holds other weights."""
    from torchvision.models.optical_flow import raft_large

    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = raft_large(weights=None, progress=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not hold RAFT-Large's weights: {exc}") from exc
    return model.to(device).eval()


@torch.no_grad()
def estimate_flow(
    model: torch.nn.Module, frame_a: torch.Tensor, frame_b: torch.Tensor, iterations: int = RAFT_ITERATIONS
) -> torch.Tensor:
    """RAFT's flow from ``frame_a`` to ``frame_b``: (2, H, W) float32 in pixels, on the frames' device.

    Frames: (1, 3, H, W) or (3, H, W) in [-1, 1] (RAFT's input range), the same size, at least
    128 x 128 pixels (RAFT's coarsest correlation level, 1/64 of the frame, needs 2 x 2). Sides that are not
    multiples of 8 are padded (edge pixels repeated) and the flow cropped back. Raises ValueError
    for frames of different shapes or too small."""
    a = frame_a if frame_a.dim() == 4 else frame_a[None]
    b = frame_b if frame_b.dim() == 4 else frame_b[None]
    if a.shape != b.shape or a.shape[:2] != (1, 3):
        raise ValueError(f"frames must both be (1, 3, H, W); got {tuple(a.shape)} and {tuple(b.shape)}")
    height, width = a.shape[-2:]
    if min(height, width) < RAFT_MIN_SIZE:
        raise ValueError(
            f"RAFT needs frames of at least {RAFT_MIN_SIZE} x {RAFT_MIN_SIZE} pixels; got {height} x {width}"
        )
    pad_h, pad_w = -height % 8, -width % 8
    param = next(model.parameters())
    a = F.pad(a, (0, pad_w, 0, pad_h), mode="replicate").to(param)
    b = F.pad(b, (0, pad_w, 0, pad_h), mode="replicate").to(param)
    flows = model(a, b, num_flow_updates=iterations)  # one estimate per update; the last is the best
    return flows[-1][0, :, :height, :width].float().to(frame_a.device)


def _as_array(flow: torch.Tensor | np.ndarray) -> np.ndarray:
    array = flow.detach().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow)
    if array.ndim != 3 or array.shape[0] != 2:
        raise ValueError(f"a flow must be (2, H, W); got {array.shape}")
    return array.astype(np.float32)


def _sampling_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``remap``'s maps for reading at ``p + flow(p)``: absolute x and y of every pixel."""
    height, width = flow.shape[1:]
    map_x = flow[0] + np.arange(width, dtype=np.float32)[None, :]
    map_y = flow[1] + np.arange(height, dtype=np.float32)[:, None]
    return map_x, map_y


def warp_with_flow(image: np.ndarray, flow: torch.Tensor | np.ndarray, border: int | None = None) -> np.ndarray:
    """``image`` read at ``p + flow(p)`` (bilinear, OpenCV's ``remap``): ``warped(p) = image(p + flow(p))``.

    ``image``: (H, W) or (H, W, C) array (any dtype ``remap`` takes); ``flow``: (2, H, W) in pixels,
    e.g. the backward flow from the frame to be made to ``image``'s frame. ``border``: OpenCV's
    border mode for reads past the edge (default ``BORDER_CONSTANT``: 0, the notebook's ``remap`` default). Returns an
    array of ``image``'s shape and dtype. Raises ValueError when the sizes differ."""
    flow = _as_array(flow)
    if image.shape[:2] != flow.shape[1:]:
        raise ValueError(f"image {image.shape[:2]} and flow {flow.shape[1:]} differ in size")
    map_x, map_y = _sampling_maps(flow)
    cv2 = opencv()
    border = cv2.BORDER_CONSTANT if border is None else border
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=border)


def consistency_mask(
    flow: torch.Tensor | np.ndarray,
    reverse_flow: torch.Tensor | np.ndarray,
    relative: float = CONSISTENCY_RELATIVE,
    absolute: float = CONSISTENCY_ABSOLUTE,
) -> np.ndarray:
    """Where ``flow`` (frame a to b) can be trusted, by the forward-backward check against
    ``reverse_flow`` (b to a): an (H, W) float32 array, 1 for reliable and 0 for occluded or
    unreliable pixels and for pixels whose flow leaves the frame. For the notebook's backward warp
    of the previous frame onto the current one, pass the backward flow first."""
    flow, reverse_flow = _as_array(flow), _as_array(reverse_flow)
    if flow.shape != reverse_flow.shape:
        raise ValueError(f"flows differ in shape: {flow.shape} and {reverse_flow.shape}")
    height, width = flow.shape[1:]
    map_x, map_y = _sampling_maps(flow)
    cv2 = opencv()
    back = np.stack(
        [
            cv2.remap(c, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for c in reverse_flow
        ]
    )
    round_trip = ((flow + back) ** 2).sum(axis=0)
    tolerance = relative * ((flow**2).sum(axis=0) + (back**2).sum(axis=0)) + absolute
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return ((round_trip <= tolerance) & inside).astype(np.float32)


class FlowModel:
    """RAFT's flow between two pictures of one size, as an animation asks for it: (H, W, 3) uint8
    frames in, a (2, H, W) float32 array in pixels of those frames out (``estimate_flow``'s
    convention). Frames with a side under ``RAFT_MIN_SIZE`` are enlarged by the smallest whole
    factor that makes both sides at least that (bilinear), and the flow is shrunk back (its size and
    its vectors, by that factor)."""

    def __init__(self, model: torch.nn.Module, iterations: int = RAFT_ITERATIONS):
        self.model = model
        self.iterations = iterations

    def flow(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        """The flow from ``frame_a`` to ``frame_b`` (see the class). Raises ValueError when the frames'
        shapes differ or are not (H, W, 3)."""
        if frame_a.shape != frame_b.shape or frame_a.ndim != 3 or frame_a.shape[2] != 3:
            raise ValueError(f"frames must both be (H, W, 3); got {frame_a.shape} and {frame_b.shape}")
        height, width = frame_a.shape[:2]
        factor = -(-RAFT_MIN_SIZE // min(height, width))  # 1 for frames large enough
        cv2 = opencv()
        device = next(self.model.parameters()).device

        def tensor(frame: np.ndarray) -> torch.Tensor:
            if factor > 1:
                frame = cv2.resize(frame, (width * factor, height * factor), interpolation=cv2.INTER_LINEAR)
            picture = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
            return picture.div(127.5).sub(1).to(device)

        flow = estimate_flow(self.model, tensor(frame_a), tensor(frame_b), self.iterations).cpu().numpy()
        if factor == 1:
            return flow
        shrunk = [cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA) for c in flow]
        return np.stack(shrunk).astype(np.float32) / factor
