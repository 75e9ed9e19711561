"""Images as tensors: reading a photo, cropping it to the model's square, mirroring a left hand.

Every image in handlib is a float tensor (3, H, W) in [0, 1], RGB. The pixel convention is the
renderer's (``handlib.render.camera``): pixel column j covers ``u`` in ``[j, j + 1)``, its centre
is at ``u = j + 0.5``, and a W-pixel-wide image covers ``[0, W]``.

Square crop. A method takes an S x S crop; a photo is W x H. ``square_crop_resize`` pads the
shorter side (centred) to a square of side L = max(W, H) and resizes it to S. In pixel
coordinates this is the affine map

    u_crop = (u - x0) / scale,   v_crop = (v - y0) / scale,     scale = L / S,

where (x0, y0) = (-pad_left, -pad_top) is the square's top-left corner in the photo's pixels
(pixel edges map onto pixel edges, as ``F.interpolate(align_corners=False)`` resamples).
``SquareCrop`` holds (scale, x0, y0) and maps keypoints both ways.

Mirroring. The course's models know right hands; a left hand seen in a mirror is a right hand.
Flipping an image left to right maps ``u -> W - u`` (column j -> W - 1 - j), and the matching
reflection of the camera frame is ``x -> -x`` with ``cx -> W - cx`` (and ``K[0, 1] -> -K[0, 1]``),
so the projection ``u = fx x / z + cx`` still holds. Each map is its own inverse.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handlib.render.camera import check_image_size


class ImageError(ValueError):
    """A file that is not a readable image (not an image, truncated, corrupt, empty)."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

# Modes Pillow uses for 16-bit grayscale (PNG): their values run over 0..65535.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Modes with an alpha channel (premultiplied ones included).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def read_image(path) -> torch.Tensor:
    """Read a photo (JPEG, PNG, or anything else Pillow reads) as an RGB tensor in [0, 1].

    The whole file is decoded here (``Image.load``), so a truncated or corrupt file fails now,
    not later; Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is held False while the file is
    decoded, whatever it was set to. Then:

    * the EXIF orientation is applied (a phone photo stands the right way up);
    * grayscale (1-bit and 8-bit) is repeated over the 3 channels; palette, CMYK, YCbCr are
      converted to RGB by Pillow;
    * 16-bit grayscale PNGs (Pillow's ``I;16`` modes, and ``I``) are scaled by 1 / 65535, so
      65535 is 1.0 (Pillow's own ``convert("RGB")`` would clip them at 255). Pillow reads 16-bit
      *colour* PNGs as 8 bits per channel;
    * transparency (RGBA, LA, a palette or a colour key with transparency) is composited on
      WHITE: ``rgb * alpha + (1 - alpha)``, so a cut-out hand stands on a white page.

    Args:
        path: the image file.

    Returns:
        (3, H, W) float32 tensor in [0, 1], RGB, H x W the image's size after the EXIF rotation.

    Raises:
        FileNotFoundError: no file at ``path``.
        ImageError (a ValueError): the file is empty, not an image, truncated or corrupt, of an
            unsupported mode, or has zero width or height. The message starts with the path.
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise ImageError(f"{path}: not a file; give the path of a JPEG or PNG image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes); the image was not written completely, copy it again")
    truncated_allowed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()                                  # decode every byte now
            image = ImageOps.exif_transpose(image)
            array = _rgb_array(image)                     # (H, W, 3) float32 in [0, 1]
    except UnidentifiedImageError as error:
        raise ImageError(f"{path}: not an image Pillow can read (expected JPEG or PNG)") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: too many pixels to be a hand crop ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        if isinstance(error, ImageError):
            raise ImageError(f"{path}: {error}") from error
        raise ImageError(f"{path}: truncated or corrupt image ({error}); copy or export it again") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_allowed
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{path}: the image has zero size ({array.shape[1]} x {array.shape[0]} pixels)")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _rgb_array(image) -> np.ndarray:
    """A decoded Pillow image as (H, W, 3) float32 in [0, 1] (see ``read_image`` for the rules)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image).astype(np.float32)       # I;16B arrives big-endian; astype reads it right
        gray = np.clip(gray, 0.0, 65535.0) / 65535.0
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        raise ImageError("32-bit float images (mode F) have no agreed range; save the photo as 8-bit RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32) / 255.0
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1.0 - alpha)     # composited on white
    return np.asarray(image.convert("RGB")).astype(np.float32) / 255.0


def check_image(image, name: str = "image") -> torch.Tensor:
    """``image`` as given if it is a (3, H, W) floating tensor with H, W >= 1; else a ValueError naming ``name``."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point() \
            or image.shape[1] < 1 or image.shape[2] < 1:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected a float tensor of shape (3, H, W) in [0, 1] (``read_image``), got {got}")
    return image


# --------------------------------------------------------------------------------------------
# Cropping to the model's square
# --------------------------------------------------------------------------------------------

def crop_padded(image: torch.Tensor, x0: int, y0: int, side: int, fill=0.0) -> torch.Tensor:
    """The square of pixels [y0, y0 + side) x [x0, x0 + side) of an image, ``fill`` outside it.

    Args:
        image: (C, H, W).
        x0, y0: integer left and top edges of the square (column and row of its first pixel),
            pixels; they may lie outside the image.
        side: the square's side, pixels.
        fill: the value of the pixels outside the image: a number, or a (C,) tensor (one per channel).

    Returns:
        (C, side, side).
    """
    channels, height, width = image.shape
    out = torch.empty(channels, side, side, dtype=image.dtype, device=image.device)
    out[:] = torch.as_tensor(fill, dtype=image.dtype, device=image.device).reshape(-1, 1, 1)
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + side, height), min(x0 + side, width)
    if bottom > top and right > left:
        out[:, top - y0:bottom - y0, left - x0:right - x0] = image[:, top:bottom, left:right]
    return out


@dataclass(frozen=True)
class SquareCrop:
    """Where a square crop of side ``size`` came from: ``u = scale * u_crop + x0``, ``v = scale * v_crop + y0``.

    Attributes:
        scale: pixels of the original image per pixel of the crop (L / size, L the square's side).
        x0, y0: the square's top-left corner in the original image's pixels (negative where the
            image was padded on the left or top).
        size: side of the crop, pixels.
        width, height: size of the original image, pixels.
    """
    scale: float
    x0: float
    y0: float
    size: int
    width: int
    height: int

    def to_original(self, points: torch.Tensor) -> torch.Tensor:
        """Points in the crop's pixels -> the original image's pixels. (..., 2) -> (..., 2)."""
        _check_points_2d(points)
        offset = torch.tensor([self.x0, self.y0], dtype=points.dtype, device=points.device)
        return points * self.scale + offset

    def to_crop(self, points: torch.Tensor) -> torch.Tensor:
        """Points in the original image's pixels -> the crop's pixels (the inverse). (..., 2) -> (..., 2)."""
        _check_points_2d(points)
        offset = torch.tensor([self.x0, self.y0], dtype=points.dtype, device=points.device)
        return (points - offset) / self.scale


def _check_points_2d(points):
    if not isinstance(points, torch.Tensor) or points.ndim < 1 or points.shape[-1] != 2 \
            or not points.is_floating_point():
        got = f"{points.dtype} {tuple(points.shape)}" if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points: expected a float tensor of shape (..., 2), pixels (u, v), got {got}")


def square_crop_resize(image: torch.Tensor, size: int) -> tuple[torch.Tensor, SquareCrop]:
    """Pad an image to a square (centred) and resize it to ``size`` x ``size``.

    The shorter side is padded equally on both sides (the odd pixel goes to the right or the
    bottom) with the image's MEAN COLOUR: a neutral border, with neither the black edge of zero
    padding nor the streaks that repeating the edge pixels draws (which can look like an arm).
    The square is resized with antialiased bilinear interpolation
    (``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``).

    Args:
        image: (3, H, W) float in [0, 1].
        size: side of the result, pixels (a method's ``config.image_size``).

    Returns:
        (crop, transform): crop (3, size, size) in [0, 1]; transform the ``SquareCrop`` that maps
        the crop's pixels back to the image's (``transform.to_original(keypoints_2d)``).

    Example:
        >>> crop, transform = square_crop_resize(torch.rand(3, 100, 200), 128)
        >>> crop.shape, transform.scale, (transform.x0, transform.y0)
        (torch.Size([3, 128, 128]), 1.5625, (0.0, -50.0))
    """
    check_image(image)
    size, _ = check_image_size(size, "size")
    _, height, width = image.shape
    side = max(height, width)
    x0, y0 = -((side - width) // 2), -((side - height) // 2)
    square = crop_padded(image, x0, y0, side, fill=image.mean(dim=(1, 2)))  # (3, side, side)
    crop = F.interpolate(square[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    transform = SquareCrop(scale=side / size, x0=float(x0), y0=float(y0), size=size, width=width, height=height)
    return crop.clamp(0.0, 1.0), transform


# --------------------------------------------------------------------------------------------
# Mirroring (a left hand as a right hand)
# --------------------------------------------------------------------------------------------

def mirror_image(image: torch.Tensor) -> torch.Tensor:
    """Flip an image (or mask, depth map) left to right: column j -> W - 1 - j. (..., H, W) -> (..., H, W)."""
    return image.flip(-1)


def mirror_keypoints_2d(keypoints: torch.Tensor, width) -> torch.Tensor:
    """The pixels of points in the image flipped left to right: ``u -> width - u``, v unchanged.

    Args:
        keypoints: (..., 2) pixels (u, v).
        width: W of the image, pixels (a number, or a tensor broadcastable to (...,)).

    Returns:
        (..., 2), a new tensor. Mirroring twice gives the points back.
    """
    _check_points_2d(keypoints)
    mirrored = keypoints.clone()
    mirrored[..., 0] = width - keypoints[..., 0]
    return mirrored


def mirror_points_3d(points: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (keypoints, vertices) of the mirrored image: ``x -> -x``. (..., 3) -> (..., 3)."""
    if not isinstance(points, torch.Tensor) or points.ndim < 1 or points.shape[-1] != 3:
        got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points: expected a tensor of shape (..., 3), got {got}")
    mirrored = points.clone()
    mirrored[..., 0] = -points[..., 0]
    return mirrored


def mirror_intrinsics(K: torch.Tensor, width) -> torch.Tensor:
    """The intrinsics of the mirrored image: ``cx -> width - cx`` and ``K[0, 1] -> -K[0, 1]``. (..., 3, 3)."""
    if not isinstance(K, torch.Tensor) or K.ndim < 2 or K.shape[-2:] != (3, 3):
        got = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ValueError(f"K: expected a tensor of shape (..., 3, 3), got {got}")
    mirrored = K.clone()
    mirrored[..., 0, 2] = width - K[..., 0, 2]
    mirrored[..., 0, 1] = -K[..., 0, 1]
    return mirrored


__all__ = ["ImageError", "SquareCrop", "check_image", "crop_padded", "mirror_image", "mirror_intrinsics",
           "mirror_keypoints_2d", "mirror_points_3d", "read_image", "square_crop_resize"]
