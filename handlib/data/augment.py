"""Camera effects applied on the fly to a training batch: what a real camera does to a picture.

A rendered hand is sharp, clean and well exposed; a photo is not. These effects change only the
pixels (never the keypoints, masks or depth), so they can be drawn anew at every training step
over the cached renders and cost a few milliseconds a batch::

    batch["image"] = camera_effects(batch["image"], generator)

In the order a camera applies them:

1. **Optics**: defocus (Gaussian blur) or motion blur (a line kernel at a random angle).
2. **Resolution**: the hand was small in the frame: downsample by 1.5x to 4x and upsample back.
3. **Sensor noise**: Gaussian read noise plus shot noise growing with the brightness.
4. **Processing**: white balance (per-channel gains), exposure, contrast, saturation (sometimes
   grey), a gamma curve.
5. **Compression**: JPEG at quality 15 to 85.

Each effect is applied to a random part of the batch (``EFFECTS`` holds the probabilities), with
parameters drawn per image from ``generator``: the same generator state gives the same images.
The training loop passes the step's seeded generator (``handlib.train``), so a run stays
reproducible and resumable.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

# Probability that an image gets each effect.
EFFECTS = {"defocus": 0.3, "motion_blur": 0.15, "low_resolution": 0.25, "noise": 0.5, "color": 0.9,
           "grey": 0.03, "jpeg": 0.3}
_KERNEL = 9  # taps of the blur kernels (odd): enough for a sigma of 2 px and a 9 px motion streak


def _uniform(count: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


def _chosen(count: int, probability: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) < probability


def blur_images(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernel (same for the three channels), edges replicated.

    Args:
        images: (B, 3, H, W).
        kernels: (B, k, k) with k odd, each summing to 1.

    Returns:
        (B, 3, H, W).
    """
    batch, channels, height, width = images.shape
    k = kernels.shape[-1]
    padded = F.pad(images.reshape(1, batch * channels, height, width), (k // 2,) * 4, mode="replicate")
    weights = kernels.repeat_interleave(channels, 0)[:, None]                       # (B*3, 1, k, k)
    return F.conv2d(padded, weights, groups=batch * channels).view(batch, channels, height, width)


def defocus_kernels(sigma: torch.Tensor, size: int = _KERNEL) -> torch.Tensor:
    """Gaussian kernels (B, size, size) of standard deviation ``sigma`` (B,) pixels."""
    taps = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    line = torch.exp(-0.5 * (taps / sigma[:, None].clamp_min(1e-3)) ** 2)             # (B, size)
    kernels = line[:, :, None] * line[:, None, :]
    return kernels / kernels.sum((1, 2), keepdim=True)


def motion_kernels(length: torch.Tensor, angle: torch.Tensor, size: int = _KERNEL) -> torch.Tensor:
    """Line kernels (B, size, size): a streak ``length`` (B,) pixels long at ``angle`` (B,) radians,
    anti-aliased (each tap weighted by its distance to the line)."""
    taps = torch.arange(size, dtype=length.dtype, device=length.device) - size // 2
    y, x = torch.meshgrid(taps, taps, indexing="ij")                                  # (size, size)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    along = x * cos + y * sin
    across = -x * sin + y * cos
    weights = (1 - across.abs()).clamp(min=0) * (along.abs() <= length[:, None, None] / 2)
    weights = weights + (weights.sum((1, 2), keepdim=True) == 0) * (x == 0) * (y == 0)  # a point for length ~0
    return weights / weights.sum((1, 2), keepdim=True)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One image (3, H, W) in [0, 1] through a JPEG encoder at ``quality`` (1-95) and back."""
    from PIL import Image

    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image) / 255.0


def camera_effects(images: torch.Tensor, generator: torch.Generator, effects: dict | None = None) -> torch.Tensor:
    """The camera effects, each on a random part of the batch, drawn from ``generator``.

    Args:
        images: (B, 3, H, W) in [0, 1], on the generator's device.
        generator: a ``torch.Generator`` (the training step's); every draw comes from it.
        effects: {effect: probability}, default ``EFFECTS``; a missing effect is never applied.

    Returns:
        (B, 3, H, W) in [0, 1], a new tensor.

    Example:
        >>> images = torch.rand(4, 3, 64, 64)
        >>> out = camera_effects(images, torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([4, 3, 64, 64])
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected shape (B, 3, H, W), got {tuple(images.shape)}")
    effects = EFFECTS if effects is None else effects
    unknown = set(effects) - set(EFFECTS)
    if unknown:
        raise ValueError(f"effects: unknown {sorted(unknown)}; expected some of {sorted(EFFECTS)}")
    batch, _, height, width = images.shape
    device = images.device

    def draw(name: str) -> torch.Tensor:  # which images get the effect (every draw happens: fixed stream)
        return _chosen(batch, effects.get(name, 0.0), generator, device)

    out = images.clone()
    # 1. Optics.
    defocus, motion = draw("defocus"), draw("motion_blur")
    sigma = _uniform(batch, 0.5, 2.0, generator, device)
    length = _uniform(batch, 3.0, _KERNEL, generator, device)
    angle = _uniform(batch, 0.0, math.pi, generator, device)
    kernels = torch.where(motion[:, None, None], motion_kernels(length, angle), defocus_kernels(sigma))
    blurred = defocus | motion
    if blurred.any():
        out[blurred] = blur_images(out[blurred], kernels[blurred])

    # 2. Resolution: the same picture from fewer pixels.
    low = draw("low_resolution")
    scale = _uniform(batch, 0.25, 0.67, generator, device)
    for i in low.nonzero().flatten().tolist():
        small = (max(4, round(height * float(scale[i]))), max(4, round(width * float(scale[i]))))
        shrunk = F.interpolate(out[i:i + 1], size=small, mode="bilinear", antialias=True, align_corners=False)
        out[i:i + 1] = F.interpolate(shrunk, size=(height, width), mode="bilinear", align_corners=False)

    # 3. Sensor noise: read noise plus shot noise (variance grows with the signal).
    noisy = draw("noise")
    read = _uniform(batch, 0.003, 0.03, generator, device)[:, None, None, None]
    shot = _uniform(batch, 0.0, 0.04, generator, device)[:, None, None, None]
    gaussian = torch.randn(out.shape, generator=generator, device=device)
    noise = gaussian * (read ** 2 + shot ** 2 * out.clamp_min(0)).sqrt()
    out = torch.where(noisy[:, None, None, None], out + noise, out).clamp(0, 1)

    # 4. Processing: white balance and exposure, contrast, saturation, gamma.
    colored = draw("color")[:, None, None, None]
    gains = (_uniform(3 * batch, 0.85, 1.15, generator, device).view(batch, 3)
             * _uniform(batch, 0.55, 1.5, generator, device)[:, None])[..., None, None]          # (B, 3, 1, 1)
    contrast = _uniform(batch, 0.6, 1.4, generator, device)[:, None, None, None]
    saturation = _uniform(batch, 0.3, 1.5, generator, device)[:, None, None, None]
    gamma = torch.exp(_uniform(batch, math.log(0.7), math.log(1.5), generator, device))[:, None, None, None]
    processed = (out * gains).clamp(0, 1)
    mean = processed.mean((1, 2, 3), keepdim=True)
    processed = ((processed - mean) * contrast + mean).clamp(0, 1)
    grey = processed.mean(1, keepdim=True)
    processed = ((processed - grey) * saturation + grey).clamp(0, 1)
    processed = processed.clamp_min(1e-6) ** gamma
    out = torch.where(colored, processed, out)
    greyed = draw("grey")[:, None, None, None]
    out = torch.where(greyed, out.mean(1, keepdim=True).expand_as(out), out)

    # 5. Compression.
    compressed = draw("jpeg")
    quality = _uniform(batch, 15, 85, generator, device).round()
    for i in compressed.nonzero().flatten().tolist():
        out[i] = jpeg(out[i], int(quality[i]))
    return out.clamp(0, 1)
