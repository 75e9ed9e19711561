"""Score maps (heatmaps): one image per keypoint whose peak marks where the keypoint is.

A network that predicts 2D keypoints rarely regresses the pixel coordinates directly; it predicts
a map c_k(p) per keypoint k and reads the location back as the map's maximum. The training
target is a Gaussian around the true location p_k::

    c_k(p) = exp(-|p - p_k|^2 / (2 sigma^2))             (zero for invisible keypoints)

Maps are usually smaller than the image (e.g. 32 x 32 for a 128 x 128 input). Pixels follow
handlib's one convention (``handlib.render.camera``): pixel column i covers u in [i, i + 1), its
centre is at i + 0.5, and a W-pixel image covers [0, W). A map of w cells covers the same width, so
cell x covers u in [x W / w, (x + 1) W / w): in cell units, x = u w / W - 0.5 (cell centres at
integer x, which is where the argmax reads).
"""
from __future__ import annotations

import torch

from handlib.render.camera import check_image_size, pixels_in_image


def _check_keypoints(keypoints_2d: torch.Tensor) -> None:
    if keypoints_2d.ndim != 3 or keypoints_2d.shape[-1] != 2:
        raise ValueError(f"keypoints_2d: expected shape (B, K, 2) in pixels, got {tuple(keypoints_2d.shape)}")


def image_to_heatmap_coords(pixels: torch.Tensor, image_size, heatmap_size) -> torch.Tensor:
    """Map image pixel coordinates (u, v) to heatmap cell coordinates (x, y).

    Args:
        pixels: (..., 2) image pixels (u right, v down).
        image_size: (H, W) of the image, or one int.
        heatmap_size: (h, w) of the heatmap, or one int.

    Returns:
        (..., 2) heatmap coordinates, cell centres at integers: x = u w / W - 0.5, likewise for y.
    """
    (height, width), (h, w) = check_image_size(image_size), check_image_size(heatmap_size, "heatmap_size")
    factor = pixels.new_tensor([w / width, h / height])
    return pixels * factor - 0.5


def heatmap_to_image_coords(cells: torch.Tensor, image_size, heatmap_size) -> torch.Tensor:
    """Inverse of ``image_to_heatmap_coords``: u = (x + 0.5) W / w.

    Args:
        cells: (..., 2) heatmap coordinates (x, y).
        image_size, heatmap_size: (H, W) and (h, w), or ints.

    Returns:
        (..., 2) image pixels.
    """
    (height, width), (h, w) = check_image_size(image_size), check_image_size(heatmap_size, "heatmap_size")
    factor = cells.new_tensor([width / w, height / h])
    return (cells + 0.5) * factor


def gaussian_heatmaps(keypoints_2d: torch.Tensor, image_size, heatmap_size, sigma: float,
                      visibility: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian score maps c_k(p) = exp(-|p - p_k|^2 / (2 sigma^2)), measured in image pixels.

    Maps of invisible keypoints, of keypoints outside the image, and of NaN keypoints are all zero.

    Args:
        keypoints_2d: (B, K, 2) pixels in the image.
        image_size: (H, W) of the image the keypoints live in, or one int.
        heatmap_size: (h, w) of the maps, or one int.
        sigma: standard deviation in *image* pixels (so it does not change with the map size).
        visibility: (B, K), 1 visible, 0 not; None means all visible.

    Returns:
        (B, K, h, w) float tensor in [0, 1], on the device of ``keypoints_2d``.

    Example:
        >>> maps = gaussian_heatmaps(torch.tensor([[[64.0, 64.0]]]), 128, 32, sigma=4.0)
        >>> maps.shape, round(float(maps.max()), 3)   # 64 is 2 px from 4 cell centres: exp(-8/32)
        (torch.Size([1, 1, 32, 32]), 0.779)
    """
    _check_keypoints(keypoints_2d)
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive number of pixels, got {sigma!r}")
    (height, width), (h, w) = check_image_size(image_size), check_image_size(heatmap_size, "heatmap_size")
    keypoints_2d = keypoints_2d.float()
    valid = pixels_in_image(keypoints_2d, (height, width))
    if visibility is not None:
        if tuple(visibility.shape) != tuple(keypoints_2d.shape[:2]):
            raise ValueError(f"visibility: expected shape {tuple(keypoints_2d.shape[:2])} (B, K), "
                             f"got {tuple(visibility.shape)}")
        valid = valid & (visibility.to(keypoints_2d.device) > 0.5)
    # Centres of the heatmap cells, in image pixels.
    ys = heatmap_to_image_coords(torch.stack([torch.zeros(h), torch.arange(h, dtype=torch.float32)], -1),
                                 (height, width), (h, w))[:, 1].to(keypoints_2d.device)      # (h,)
    xs = heatmap_to_image_coords(torch.stack([torch.arange(w, dtype=torch.float32), torch.zeros(w)], -1),
                                 (height, width), (h, w))[:, 0].to(keypoints_2d.device)      # (w,)
    points = torch.nan_to_num(keypoints_2d)
    dx2 = (xs[None, None, :] - points[..., 0:1]) ** 2                                        # (B, K, w)
    dy2 = (ys[None, None, :] - points[..., 1:2]) ** 2                                        # (B, K, h)
    maps = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2.0 * sigma ** 2))         # (B, K, h, w)
    return maps * valid[..., None, None]


def _check_heatmaps(heatmaps: torch.Tensor) -> None:
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps: expected shape (B, K, h, w), got {tuple(heatmaps.shape)}")


def heatmap_argmax(heatmaps: torch.Tensor, image_size) -> torch.Tensor:
    """Read keypoints back as the cell with the highest score, in image pixels.

    Args:
        heatmaps: (B, K, h, w).
        image_size: (H, W) of the input image, or one int.

    Returns:
        (B, K, 2) pixels (u, v). Precision is limited to one cell (W / w pixels).
    """
    _check_heatmaps(heatmaps)
    batch, count, h, w = heatmaps.shape
    index = heatmaps.reshape(batch, count, h * w).argmax(-1)                      # (B, K)
    cells = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], -1).float()
    return heatmap_to_image_coords(cells, image_size, (h, w))


def heatmap_soft_argmax(heatmaps: torch.Tensor, image_size, beta: float = 1.0) -> torch.Tensor:
    """Differentiable readout: the expected cell under softmax(beta * heatmap), in image pixels.

    x_hat = sum_p p * exp(beta c(p)) / sum_p exp(beta c(p)) ("integral regression"). The map is
    read as logits: a network trained through this readout learns maps for which it is exact.
    On a Gaussian score map with values in [0, 1] and a zero background, a small ``beta`` lets the
    many background cells pull the estimate towards the map centre; use ``beta`` of about 100
    there (close to the argmax) or ``heatmap_argmax``.

    Args:
        heatmaps: (B, K, h, w).
        image_size: (H, W) of the input image, or one int.
        beta: sharpness of the softmax.

    Returns:
        (B, K, 2) pixels (u, v), differentiable with respect to ``heatmaps``.
    """
    _check_heatmaps(heatmaps)
    batch, count, h, w = heatmaps.shape
    weights = torch.softmax(beta * heatmaps.reshape(batch, count, h * w), dim=-1).reshape(batch, count, h, w)
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device)
    cells = torch.stack([(weights.sum(-2) * xs).sum(-1), (weights.sum(-1) * ys).sum(-1)], -1)   # (B, K, 2)
    return heatmap_to_image_coords(cells, image_size, (h, w))
