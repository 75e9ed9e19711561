"""The renderer: a pure-torch rasterizer (RGB, depth, mask, part labels) and a soft silhouette.

* ``camera``: the pixel convention (``pixels_in_image``), intrinsics, crops as intrinsics, placing
  a mesh in front of the camera.
* ``rasterize``: the z-buffer rasterizer (``rasterize``, ``interpolate``, ``Fragments``).
* ``shade``: vertex normals, Lambert + ambient shading (``shade_covered``), ``render`` -> ``RenderOutput``.
* ``silhouette``: the differentiable SoftRas silhouette for mask losses.
* ``soft_depth``: a differentiable soft depth map (SoftRas aggregation of depth) for depth losses.

The same code runs on CPU and CUDA; every input is batch-first, camera frame (OpenCV), metres.
"""
from handlib.render.camera import crop_intrinsics, make_intrinsics, pixels_in_image, place_in_front
from handlib.render.rasterize import (
    Fragments,
    interpolate,
    interpolate_covered,
    rasterize,
    rasterize_reference,
)
from handlib.render.shade import RenderOutput, render, shade_covered, vertex_normals
from handlib.render.silhouette import soft_silhouette, soft_silhouette_reference
from handlib.render.soft_depth import soft_depth

__all__ = [
    "Fragments",
    "RenderOutput",
    "crop_intrinsics",
    "interpolate",
    "interpolate_covered",
    "make_intrinsics",
    "pixels_in_image",
    "place_in_front",
    "rasterize",
    "rasterize_reference",
    "render",
    "shade_covered",
    "soft_depth",
    "soft_silhouette",
    "soft_silhouette_reference",
    "vertex_normals",
]
