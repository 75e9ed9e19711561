"""A depth camera's flaws, drawn over a rendered depth map: what a real sensor would have measured.

The renderer's depth (``handlib.data.synth``) is perfect: the exact distance of every hand pixel,
0 elsewhere. A structured-light or active-stereo camera (Kinect, RealSense, the Intel camera of
the STB dataset) is not (Khoshelham & Elberink 2012, "Accuracy and resolution of Kinect depth data"):

1. **Noise growing with distance.** Depth comes from a disparity d ~ f b / z, so an error of a
   fraction of a pixel in d becomes an error in z that grows as z^2:  sigma(z) = k z^2.
2. **Holes at edges.** Where the depth jumps (the silhouette, a finger in front of the palm) the
   projected pattern is split between two surfaces and the sensor returns nothing: depth 0.
3. **Quantisation.** Depth comes in steps (1 mm for most sensors' 16-bit millimetre output).

``simulate_depth_sensor`` applies the three in that order, with every random number drawn from a
``torch.Generator`` (a training loss passes its step's ``LossContext.generator``), so the same
generator state gives the same "measurement"::

    measured = simulate_depth_sensor(batch["depth"], generator)      # (B, H, W) metres, 0 = no reading
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DepthSensor:
    """The flaws of a close-range depth camera (defaults: a structured-light sensor at 0.3-0.7 m).

    Attributes:
        noise_per_square_metre: k of sigma(z) = k z^2, 1/metres: 4e-3 gives 1 mm at 0.5 m and 2 mm at
            0.7 m (RealSense SR300-class noise at hand distance; a Kinect v1 has about 1.4e-3).
        edge_jump: metres; a pixel whose neighbourhood holds a depth this much nearer or farther, or
            the background, is on an edge.
        edge_width: pixels either side of an edge that may lose their reading.
        edge_hole_probability: chance that an edge pixel reads nothing.
        quantisation: metres per step of the output (0 = none).
    """
    noise_per_square_metre: float = 4e-3
    edge_jump: float = 0.01
    edge_width: int = 1
    edge_hole_probability: float = 0.6
    quantisation: float = 1e-3

    def __post_init__(self):
        if self.noise_per_square_metre < 0 or self.edge_jump <= 0 or self.edge_width < 0 \
                or not 0 <= self.edge_hole_probability <= 1 or self.quantisation < 0:
            raise ValueError(f"DepthSensor: expected noise >= 0, edge_jump > 0, edge_width >= 0, a probability in "
                             f"[0, 1] and quantisation >= 0, got {self}")


def depth_edges(depth: torch.Tensor, jump: float = 0.01, width: int = 1) -> torch.Tensor:
    """Hand pixels near a depth discontinuity: the silhouette, or a jump of more than ``jump`` metres.

    Args:
        depth: (B, H, W) metres, 0 where there is nothing.
        jump: metres.
        width: pixels; the neighbourhood is the (2 width + 1)^2 square around a pixel.

    Returns:
        (B, H, W) bool, True on hand pixels (depth > 0) whose neighbourhood holds the background
        or a depth more than ``jump`` away.
    """
    if depth.ndim != 3:
        raise ValueError(f"depth: expected shape (B, H, W), got {tuple(depth.shape)}")
    valid = depth > 0
    kernel = 2 * width + 1
    nearest = -F.max_pool2d(torch.where(valid, -depth, -torch.inf)[:, None], kernel, 1, width)[:, 0]  # (B, H, W)
    farthest = F.max_pool2d(torch.where(valid, depth, 0.0)[:, None], kernel, 1, width)[:, 0]
    background_near = F.max_pool2d((~valid).float()[:, None], kernel, 1, width)[:, 0] > 0
    return valid & (background_near | (farthest - nearest > jump))


def simulate_depth_sensor(depth: torch.Tensor, generator: torch.Generator | None = None,
                          sensor: DepthSensor = DepthSensor()) -> torch.Tensor:
    """What a depth camera measures of a perfect depth map: noise ~ z^2, holes at edges, quantisation.

        measured = q round((z + k z^2 n) / q),  n ~ N(0, 1)       on hand pixels that read
        measured = 0                                              on edge holes and off the hand

    Args:
        depth: (B, H, W) metres, 0 where there is nothing (the renderer's ``depth``).
        generator: where the noise and the holes are drawn from, on ``depth``'s device (None: torch's
            global generator).
        sensor: the ``DepthSensor``'s flaws.

    Returns:
        (B, H, W) metres, 0 where the sensor reads nothing. Every reading is a hand pixel of
        ``depth``; away from edges every hand pixel reads, within a few sigma(z) + q / 2.

    Example:
        >>> depth = torch.zeros(1, 8, 8); depth[0, 2:6, 2:6] = 0.5
        >>> measured = simulate_depth_sensor(depth, torch.Generator().manual_seed(0))
        >>> bool(measured[0, 3:5, 3:5].gt(0).all()), bool(measured[0, :2].eq(0).all())
        (True, True)
    """
    if depth.ndim != 3:
        raise ValueError(f"depth: expected shape (B, H, W) metres, got {tuple(depth.shape)}")
    valid = depth > 0
    noise = torch.randn(depth.shape, generator=generator, device=depth.device, dtype=depth.dtype)
    measured = depth + sensor.noise_per_square_metre * depth ** 2 * noise                # sigma(z) = k z^2
    edges = depth_edges(depth, sensor.edge_jump, sensor.edge_width)
    holes = edges & (torch.rand(depth.shape, generator=generator, device=depth.device)
                     < sensor.edge_hole_probability)
    if sensor.quantisation > 0:
        measured = torch.round(measured / sensor.quantisation) * sensor.quantisation
    return torch.where(valid & ~holes, measured.clamp_min(0.0), torch.zeros_like(measured))
