"""The init-image loss: LPIPS (VGG16), as Disco Diffusion uses it.

The ``lpips`` package ships its small linear heads; the VGG16 backbone comes from the model
directory (torchvision's ``vgg16-397923af.pth``), read with ``weights_only`` and only when
an init image is used with ``init_scale > 0``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .checkpoint import load_state_dict_file


def load_lpips(vgg16_path: str | Path) -> torch.nn.Module:
    """LPIPS-VGG with the backbone loaded strictly from a torchvision VGG16 state_dict."""
    import lpips  # imported here: only runs that use an init image need it

    with warnings.catch_warnings():  # torchvision's notice about lpips' old `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    features = {
        k.removeprefix("features."): v for k, v in load_state_dict_file(vgg16_path).items() if k.startswith("features.")
    }
    # lpips cuts VGG16's feature stack into slices that keep the original layer indices.
    backbone = {}
    for key in model.net.state_dict():
        _, index, param = key.split(".")
        if f"{index}.{param}" not in features:
            raise ValueError(f"{vgg16_path}: not a VGG16 state_dict (missing features.{index}.{param})")
        backbone[key] = features[f"{index}.{param}"]
    model.net.load_state_dict(backbone, strict=True)
    return model.eval().requires_grad_(False)
