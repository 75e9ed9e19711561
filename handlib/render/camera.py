"""The pinhole camera and the pixel grid: intrinsics, crops as new intrinsics, placing a mesh in front.

Conventions, the one pixel convention of handlib (renderer, score maps, crops, plots):
    * Camera frame as OpenCV: x right, y down, z forward, metres.
    * A point (X, Y, Z) projects to u = fx X / Z + cx, v = fy Y / Z + cy, in pixels
      (``handlib.geometry.project_points``).
    * Pixel column i covers u in [i, i + 1); its centre is at u = i + 0.5. So a W x H image covers
      [0, W) x [0, H), its centre is at cx = W / 2, and a point projecting to u = 10.5 lies at the
      centre of column 10. (matplotlib's ``imshow`` puts pixel centres at integers unless given
      ``extent=(0, W, H, 0)``, which ``handlib.viz.plot2d`` does.)
"""
from __future__ import annotations

import torch


def check_image_size(image_size, name: str = "image_size") -> tuple[int, int]:
    """``image_size`` as (H, W): an int n means (n, n). Raises ValueError (naming ``name``) otherwise."""
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    try:
        height, width = (int(s) for s in size)
        ok = all(int(s) == s for s in size) and height > 0 and width > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a positive int or (H, W), got {image_size!r}")
    return height, width


def pixels_in_image(points: torch.Tensor, image_size) -> torch.Tensor:
    """True for the finite points that fall on the image: 0 <= u < W and 0 <= v < H.

    Args:
        points: (..., 2) pixels (u right, v down).
        image_size: (H, W) or one int.

    Returns:
        bool tensor (...).

    Example:
        >>> pixels_in_image(torch.tensor([[0.0, 0.0], [63.9, 10.0], [64.0, 10.0], [float("nan"), 1.0]]), 64)
        tensor([ True,  True, False, False])
    """
    if not isinstance(points, torch.Tensor) or points.ndim < 1 or points.shape[-1] != 2:
        got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points: expected a tensor of shape (..., 2) in pixels, got {got}")
    height, width = check_image_size(image_size)
    u, v = points[..., 0], points[..., 1]
    return (u >= 0) & (u < width) & (v >= 0) & (v < height)  # NaN compares False


def make_intrinsics(focal, cx, cy, focal_y=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """The intrinsics matrix K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].

    Args:
        focal: fx in pixels; a float or a tensor of shape (B,).
        cx, cy: principal point in pixels (the image centre is (W / 2, H / 2)); floats or (B,).
        focal_y: fy in pixels; defaults to ``focal`` (square pixels).
        dtype, device: of the result when the inputs are Python numbers.

    Returns:
        (3, 3) when every input is a number or a 0-d tensor, else (B, 3, 3).

    Example:
        >>> make_intrinsics(200.0, 64.0, 64.0)
        tensor([[200.,   0.,  64.],
                [  0., 200.,  64.],
                [  0.,   0.,   1.]])
    """
    focal_y = focal if focal_y is None else focal_y
    values = [torch.as_tensor(v, dtype=dtype, device=device) for v in (focal, focal_y, cx, cy)]
    for name, value in zip(("focal", "focal_y", "cx", "cy"), values):
        if value.ndim > 1:
            raise ValueError(f"{name}: expected a number or a tensor of shape (B,), got shape {tuple(value.shape)}")
    fx, fy, cx, cy = torch.broadcast_tensors(*values)  # each () or (B,)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [fx, zero, cx, zero, fy, cy, zero, zero, one]
    return torch.stack(rows, dim=-1).reshape(*fx.shape, 3, 3)  # (3, 3) or (B, 3, 3)


def crop_intrinsics(K: torch.Tensor, box, out_size: int) -> torch.Tensor:
    """The intrinsics of a square crop of an image, resized to ``out_size`` x ``out_size`` pixels.

    Cropping shifts the principal point; resizing by s = out_size / size scales all of K's first
    two rows: u' = s (u - x0), v' = s (v - y0). So rendering with the new K gives the same picture
    as rendering with K and then cropping and resizing (pixel edges map onto pixel edges).

    Args:
        K: (3, 3) or (B, 3, 3) intrinsics of the full image.
        box: (x0, y0, size) of the crop, pixels: its left and top edges and its side length.
            Numbers, or tensors of shape (B,) for one crop per image.
        out_size: side length of the resized crop, pixels.

    Returns:
        K of the crop: (3, 3), or (B, 3, 3) when K or the box is batched.
    """
    if not isinstance(K, torch.Tensor) or K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        got = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ValueError(f"K: expected a tensor of shape (3, 3) or (B, 3, 3), got {got}")
    if len(box) != 3:
        raise ValueError(f"box: expected (x0, y0, size), got {box!r}")
    x0, y0, size = (torch.as_tensor(v, dtype=K.dtype, device=K.device) for v in box)
    if (size <= 0).any():
        raise ValueError(f"box: the crop size must be positive, got {size}")
    scale = out_size / size  # () or (B,)
    # Translate by (-x0, -y0), then scale: new K = diag(s, s, 1) @ [[1, 0, -x0], [0, 1, -y0], [0, 0, 1]] @ K.
    zero, one = torch.zeros_like(scale), torch.ones_like(scale)
    shift_and_scale = torch.stack(
        [scale, zero, -scale * x0, zero, scale, -scale * y0, zero, zero, one], dim=-1
    ).reshape(*scale.shape, 3, 3)  # (3, 3) or (B, 3, 3)
    return shift_and_scale @ K


def place_in_front(vertices: torch.Tensor, distance: float | torch.Tensor) -> torch.Tensor:
    """Translate each mesh so that the centre of its bounding box lies on the optical axis at ``distance``.

    Args:
        vertices: (B, V, 3) or (V, 3), metres, any frame (its axes are taken as the camera's).
        distance: metres along +z; a float or a tensor of shape (B,).

    Returns:
        The translated vertices, same shape, camera frame.
    """
    if not isinstance(vertices, torch.Tensor) or vertices.shape[-1] != 3 or vertices.ndim not in (2, 3):
        got = tuple(vertices.shape) if isinstance(vertices, torch.Tensor) else type(vertices).__name__
        raise ValueError(f"vertices: expected a tensor of shape (B, V, 3) or (V, 3), got {got}")
    centre = (vertices.amax(dim=-2, keepdim=True) + vertices.amin(dim=-2, keepdim=True)) / 2  # (B, 1, 3)
    distance = torch.as_tensor(distance, dtype=vertices.dtype, device=vertices.device)
    target = torch.zeros_like(centre)
    target[..., 2] = distance.reshape(-1, 1) if vertices.ndim == 3 else distance
    return vertices - centre + target
