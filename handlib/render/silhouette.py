"""A differentiable soft silhouette (Liu et al., "Soft Rasterizer", ICCV 2019).

A hard mask is a step function of the vertex positions: its gradient is zero almost everywhere.
SoftRas replaces each triangle's hard coverage of a pixel p by a probability

    D_f(p) = sigmoid(s_f(p) * d_f(p)^2 / sigma),                                    (SoftRas eq. 1)

where d_f(p) is the distance (pixels) from the pixel centre to the projected triangle f and
s_f(p) = +1 inside it, -1 outside. The silhouette is the probability that at least one triangle
covers the pixel:

    S(p) = 1 - prod_f (1 - D_f(p)).                                                 (SoftRas eq. 4)

sigma (pixels^2) sets the blur: as sigma -> 0, S tends to the hard mask.

Computed sparsely: a triangle's term is below ``threshold`` (default 1e-4) at distances beyond
sqrt(sigma * log(1 / threshold - 1)) pixels, so only pixels in its bounding box dilated by that
margin are visited (the same candidate enumeration as ``rasterize``). The product is accumulated
as a sum of logs, log(1 - D) = logsigmoid(-s d^2 / sigma), with ``index_add``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from handlib.render.rasterize import (
    DEFAULT_NEAR,
    candidate_pixels,
    enumerate_pixels,
    evaluate_planes,
    gather_last,
    pixel_centres,
    planes_over_boxes,
    project_mesh,
    screen_barycentrics,
)


def edge_segments(triangles: torch.Tensor) -> torch.Tensor:
    """The three edges of each triangle, as the table ``squared_distance_to_edges`` reads.

    Args:
        triangles: (..., 3, 2) corners, pixels; edge i goes from corner i to corner i + 1.

    Returns:
        (5, 3, ...): [start x, start y, edge x, edge y, 1 / |edge|^2] for each edge.
    """
    start = triangles.movedim(-2, 0).movedim(-1, 0)  # (2, 3, ...) corner i
    edge = start.roll(-1, dims=1) - start  # (2, 3, ...) corner i + 1 - corner i
    inverse_length_squared = 1.0 / (edge[0] ** 2 + edge[1] ** 2).clamp_min(1e-12)  # (3, ...)
    return torch.cat([start, edge, inverse_length_squared[None]])  # (5, 3, ...)


def squared_distance_to_edges(segments: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distance from 2D points to the border of 2D triangles.

    For the segment from a to b: t = clamp((p - a).(b - a) / |b - a|^2, 0, 1), and the nearest
    point is a + t (b - a). The distance to the triangle's border is the smallest of three.

    Args:
        segments: (5, 3, ...) from ``edge_segments``. x, y: (...) point coordinates, pixels
            (broadcasting against the segments' trailing dimensions).

    Returns:
        (...) squared distances, pixels^2.
    """
    start_x, start_y, edge_x, edge_y, inverse_length_squared = segments  # (3, ...) each
    offset_x, offset_y = x - start_x, y - start_y  # (3, ...) p - a
    t = ((offset_x * edge_x + offset_y * edge_y) * inverse_length_squared).clamp(0, 1)  # (3, ...)
    to_edge_x, to_edge_y = offset_x - t * edge_x, offset_y - t * edge_y  # (3, ...) p - nearest point
    distance_squared = to_edge_x**2 + to_edge_y**2  # (3, ...)
    return torch.minimum(torch.minimum(distance_squared[0], distance_squared[1]), distance_squared[2])


@dataclass
class SoftCandidates:
    """The (triangle, pixel) pairs a soft rasterizer visits: pixel centres within the blur's margin
    of a projected triangle (from ``soft_candidates``).

    Attributes:
        item: (N,) long, the triangle, a row of the (B*F) triangles of ``ProjectedMesh``.
        pixel: (N,) long, flat index into (B*H*W).
        centres: (N, 2) pixel-centre coordinates, pixels.
        inside: (N,) bool, the centre lies inside the triangle.
        distance_squared: (N,) squared distance from the centre to the triangle's border, pixels^2,
            differentiable w.r.t. the vertices.
    """
    item: torch.Tensor
    pixel: torch.Tensor
    centres: torch.Tensor
    inside: torch.Tensor
    distance_squared: torch.Tensor


def soft_candidates(mesh, sigma: float, threshold: float) -> SoftCandidates:
    """Every pixel centre whose SoftRas term D_f(p) may exceed ``threshold``, for every triangle.

    A triangle's term is below ``threshold`` at distances beyond sqrt(sigma log(1 / threshold - 1))
    pixels, so only pixels in its bounding box dilated by that margin are visited (the same
    enumeration as ``rasterize``); the distances to the border are then computed with autograd.

    Args:
        mesh: a ``ProjectedMesh`` (``project_mesh``). sigma: blur, pixels^2. threshold: see above.
    """
    num_faces = mesh.valid.shape[1]
    flat_triangles = mesh.triangles.reshape(-1, 3, 2)  # (B*F, 3, 2)
    margin = math.sqrt(sigma * math.log(1.0 / threshold - 1.0))  # pixels
    with torch.no_grad():
        # Signed distance to each edge's line, positive inside: planes over the pixel grid as in
        # ``rasterize``, scaled by the triangle's heights h_i = 2 area / |opposite edge|.
        corners = flat_triangles.detach()
        opposite_edge = corners.roll(-2, dims=1) - corners.roll(-1, dims=1)  # (B*F, 3, 2)
        heights = mesh.double_area.reshape(-1, 1).abs() / opposite_edge.norm(dim=-1)  # (B*F, 3)
        first, size, planes = planes_over_boxes(mesh, heights, margin)  # (B*F, 2), (B*F, 2), (3, 3, B*F)
        item, dx, dy = enumerate_pixels(size, mesh.valid.reshape(-1))  # (N,) each
        line_distance = evaluate_planes(gather_last(planes, item), dx.to(planes.dtype), dy.to(planes.dtype))  # (3, N)
        # Inside: all three >= 0. Further than `margin` outside one edge's line: negligible, skip.
        nearest_line = torch.minimum(torch.minimum(line_distance[0], line_distance[1]), line_distance[2])  # (N,)
        keep = (nearest_line >= -margin).nonzero().squeeze(1)  # (N',)
        item, inside = item.index_select(0, keep), nearest_line.index_select(0, keep) >= 0
        x, y, _, pixel = candidate_pixels(
            item, dx.index_select(0, keep), dy.index_select(0, keep), first, num_faces, mesh.image_size
        )  # (N',) each

    # Each candidate's distance, differentiable through the gathered edges (one row at a time: fast on the CPU).
    table = edge_segments(flat_triangles).reshape(15, -1)  # (5 * 3, B*F)
    segments = torch.stack([row.index_select(0, item) for row in table]).view(5, 3, -1)  # (5, 3, N')
    centres = pixel_centres(x, y, mesh.triangles.dtype)  # (N', 2)
    distance_squared = squared_distance_to_edges(segments, centres[:, 0], centres[:, 1])  # (N',)
    return SoftCandidates(item, pixel, centres, inside, distance_squared)


def _log_uncovered(distance_squared: torch.Tensor, inside: torch.Tensor, sigma: float) -> torch.Tensor:
    """log(1 - D_f(p)) = logsigmoid(-s d^2 / sigma), with s = +1 inside, -1 outside (SoftRas eq. 1)."""
    signed = torch.where(inside, distance_squared, -distance_squared) / sigma
    return torch.nn.functional.logsigmoid(-signed)


def _check_sigma(sigma: float, threshold: float):
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive blur in pixels^2 (e.g. 0.5), got {sigma}")
    if not 0 < threshold < 0.5:
        raise ValueError(f"threshold: expected a small probability in (0, 0.5) (e.g. 1e-4), got {threshold}")


def soft_silhouette(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    image_size,
    sigma: float = 0.5,
    cull_backfaces: bool = False,
    threshold: float = 1e-4,
    near: float = DEFAULT_NEAR,
) -> torch.Tensor:
    """SoftRas silhouette of a batch of meshes: a differentiable stand-in for the mask.

    Args:
        vertices: (B, V, 3) camera frame (OpenCV), metres.
        faces: (F, 3) long, shared by the batch.
        K: (3, 3) or (B, 3, 3) intrinsics, pixels.
        image_size: int or (H, W), pixels.
        sigma: blur, pixels^2. Around 0.2 to 1 for a mask loss; smaller is sharper but gives
            gradients in a narrower band around the silhouette's border.
        cull_backfaces: use only the triangles facing the camera (see ``rasterize``). For a
            closed mesh wound counter-clockwise seen from outside the silhouette is the same
            (the border is made of front faces) at about half the cost.
        threshold: terms D_f(p) below it are skipped; sets the margin around each triangle.
        near: metres; triangles with a vertex at z <= near are dropped.

    Returns:
        (B, H, W) in [0, 1], differentiable w.r.t. ``vertices``.

    Known artefact (of SoftRas itself): a pixel centre lying exactly on an edge shared by k
    triangles gets 1 - 0.5^k instead of ~1, a visible dot inside the shape when sigma is large.
    """
    mesh = project_mesh(vertices, faces, K, image_size, near, cull_backfaces)
    _check_sigma(sigma, threshold)
    (batch, height, width) = (mesh.valid.shape[0], *mesh.image_size)
    candidates = soft_candidates(mesh, sigma, threshold)
    log_uncovered = _log_uncovered(candidates.distance_squared, candidates.inside, sigma)  # (N',)
    # log prod_f (1 - D_f) = sum_f log(1 - D_f), per pixel.
    log_background = vertices.new_zeros(batch * height * width).index_add(0, candidates.pixel, log_uncovered)
    return (1.0 - torch.exp(log_background)).view(batch, height, width)


def soft_silhouette_reference(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    image_size,
    sigma: float = 0.5,
    cull_backfaces: bool = False,
    near: float = DEFAULT_NEAR,
) -> torch.Tensor:
    """``soft_silhouette`` by brute force, every face against every pixel, without the margin cut-off.

    (B, F, H * W) memory and time: for tests on tiny images and for reading. Arguments and result
    are those of ``soft_silhouette``.
    """
    mesh = project_mesh(vertices, faces, K, image_size, near, cull_backfaces)
    _check_sigma(sigma, 1e-4)
    (height, width), triangles, valid = mesh.image_size, mesh.triangles, mesh.valid
    rows, columns = torch.meshgrid(
        torch.arange(height, device=vertices.device), torch.arange(width, device=vertices.device), indexing="ij"
    )
    centres = pixel_centres(columns.reshape(-1), rows.reshape(-1), vertices.dtype)  # (H*W, 2)
    every_face, every_pixel = triangles[:, :, None], centres[None, None]  # (B, F, 1, 3, 2), (1, 1, H*W, 2)
    inside = (screen_barycentrics(every_face, mesh.double_area[:, :, None], every_pixel) >= 0).all(dim=-1)  # (B, F, H*W)
    distance_squared = squared_distance_to_edges(edge_segments(every_face), every_pixel[..., 0], every_pixel[..., 1])
    log_uncovered = _log_uncovered(distance_squared, inside, sigma)
    log_uncovered = torch.where(valid[:, :, None], log_uncovered, 0.0)  # (B, F, H*W)
    return (1.0 - torch.exp(log_uncovered.sum(dim=1))).view(-1, height, width)
