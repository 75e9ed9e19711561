"""A batched triangle rasterizer in pure torch: z-buffer, perspective-correct barycentrics.

Rasterizing answers, for every pixel of every image: which triangle is nearest to the camera
along the ray through the pixel centre, how far away it is, and where on the triangle the ray
hits it (its barycentric coordinates). Everything else (colour, normals, part labels) is then
*interpolated* from the three vertices of that triangle.

The algorithm ("sparse fragments", no Python loop over faces or pixels):

1. Project the vertices to pixels (u, v) and keep their depths z.
2. For each triangle, list the pixels whose centre (x + 0.5, y + 0.5) lies in its bounding box.
   All (triangle, pixel) candidates of all images are enumerated at once with ``cumsum`` and
   ``repeat_interleave``.
3. Keep the candidates whose centre lies inside the triangle (all three edge functions >= 0).
   The edge functions divided by the corner depths, q_i = lambda_i / z_i, are planes over the
   pixel grid (``depth_planes``): three multiply-adds per candidate give both the inside test
   and the depth 1 / z = q_0 + q_1 + q_2.
4. Z-buffer: per pixel, keep the candidate with the smallest depth, with one ``scatter_reduce``
   ("amin") over an int64 key (depth bits << 32 | face id). The key makes the result
   deterministic: equal depths are broken by the smaller face id.
5. Recompute the barycentrics of the winning triangle at each covered pixel, with autograd on,
   so they (and the depth) are differentiable with respect to the vertices.

The per-candidate arrays are kept "one row per quantity" ((3, N) rather than (N, 3)) because
gathering and computing on long contiguous rows is several times faster on the CPU.

Pixel centres are at (x + 0.5, y + 0.5), the convention of ``handlib.geometry.project_points``
and ``handlib.render.camera``: a point projecting to u = 10.5 lies at the centre of column 10.

``rasterize_reference`` does the same by brute force (every face against every pixel); it is
slow and exists to check the fast path and to read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from handlib.geometry import project_points
from handlib.render.camera import check_image_size

DEFAULT_NEAR = 0.01  # metres: triangles with a vertex nearer than this (or behind the camera) are dropped
_MIN_DOUBLE_AREA = 1e-12  # pixels^2: triangles with a smaller (twice) area are degenerate and dropped
_FACE_ID_BITS = 32  # the low 32 bits of a z-buffer key hold the face id


@dataclass
class Fragments:
    """What the rasterizer found at each pixel.

    Attributes:
        face_index: (B, H, W) long, index into ``faces`` of the visible triangle; -1 = background.
        depth: (B, H, W), z of the visible surface, metres, camera frame; 0 on the background.
        mask: (B, H, W) bool, True where a triangle is visible.
        pixel_index: (N,) long, the N covered pixels as flat indices into (B * H * W), ascending.
        covered_barycentrics: (N, 3) perspective-correct barycentric coordinates of the visible
            point on its triangle, at ``pixel_index`` (they sum to 1). Differentiable w.r.t. the
            vertices. ``barycentrics`` spreads them over the image.
    """

    face_index: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    pixel_index: torch.Tensor
    covered_barycentrics: torch.Tensor

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return tuple(self.face_index.shape[1:])

    @property
    def barycentrics(self) -> torch.Tensor:
        """(B, H, W, 3) barycentrics over the whole image, zero on the background (built on access)."""
        flat = self.covered_barycentrics.new_zeros(self.face_index.numel(), 3)
        return flat.index_put((self.pixel_index,), self.covered_barycentrics).view(*self.face_index.shape, 3)


# ------------------------------------------------------------------------------------------------
# Input checks shared by the rasterizer, the shader and the soft silhouette
# ------------------------------------------------------------------------------------------------


def check_mesh(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor):
    """Validate a batch of meshes and cameras; return (vertices, faces as long, K as (B, 3, 3)).

    Args:
        vertices: (B, V, 3) float, camera frame, metres.
        faces: (F, 3) integer vertex indices in [0, V).
        K: (3, 3) shared by all images, or (B, 3, 3) / (1, 3, 3).
    """
    if not isinstance(vertices, torch.Tensor) or vertices.ndim != 3 or vertices.shape[-1] != 3:
        got = tuple(vertices.shape) if isinstance(vertices, torch.Tensor) else type(vertices).__name__
        raise ValueError(
            f"vertices: expected a float tensor of shape (B, V, 3) in the camera frame, got {got}; "
            "add a batch dimension with vertices[None] for a single mesh"
        )
    if not vertices.is_floating_point():
        raise ValueError(f"vertices: expected a floating-point tensor, got dtype {vertices.dtype}")
    if not isinstance(faces, torch.Tensor) or faces.ndim != 2 or faces.shape[1] != 3:
        got = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"faces: expected an integer tensor of shape (F, 3) shared by the batch, got {got}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces: expected an integer dtype (e.g. torch.long), got {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[1]):
        raise ValueError(
            f"faces: vertex indices must lie in [0, {vertices.shape[1]}) (V = vertices.shape[1]), "
            f"got indices from {int(faces.min())} to {int(faces.max())}"
        )
    batch = vertices.shape[0]
    if not isinstance(K, torch.Tensor) or K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        got = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ValueError(f"K: expected intrinsics of shape (3, 3) or ({batch}, 3, 3), got {got}")
    if K.ndim == 3 and K.shape[0] not in (1, batch):
        raise ValueError(f"K: expected a batch of 1 or {batch} (as vertices), got {tuple(K.shape)}")
    K = K.to(dtype=vertices.dtype, device=vertices.device).expand(batch, 3, 3)
    return vertices, faces.to(device=vertices.device, dtype=torch.long), K


# ------------------------------------------------------------------------------------------------
# The steps of the algorithm, as small functions the silhouette and the reference reuse
# ------------------------------------------------------------------------------------------------


def project_faces(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, near: float):
    """Project every triangle to the image.

    Args:
        vertices: (B, V, 3), camera frame, metres. faces: (F, 3) long. K: (B, 3, 3).
        near: metres; a triangle with a vertex at z <= near is marked invalid.

    Returns:
        triangles: (B, F, 3, 2) pixel coordinates (u, v) of the three corners.
        inverse_depth: (B, F, 3) 1 / z of the three corners, 1 / metres.
        double_area: (B, F) signed area of the projected triangle times 2, pixels^2
            (negative = the triangle faces the camera, for faces wound counter-clockwise
            seen from outside; see ``front_facing``).
        valid: (B, F) bool, in front of the near plane and not degenerate.
    """
    pixels = project_points(vertices, K)  # (B, V, 2)
    depth = vertices[..., 2]  # (B, V)
    corner_index = faces.reshape(-1)  # (3F,)
    triangles = pixels.index_select(1, corner_index).view(*pixels.shape[:1], *faces.shape, 2)  # (B, F, 3, 2)
    corner_depth = depth.index_select(1, corner_index).view(*depth.shape[:1], *faces.shape)  # (B, F, 3)
    edge_1 = triangles[:, :, 1] - triangles[:, :, 0]  # (B, F, 2)
    edge_2 = triangles[:, :, 2] - triangles[:, :, 0]  # (B, F, 2)
    double_area = edge_1[..., 0] * edge_2[..., 1] - edge_1[..., 1] * edge_2[..., 0]  # (B, F)
    valid = (corner_depth > near).all(dim=-1) & (double_area.abs() > _MIN_DOUBLE_AREA)  # (B, F)
    inverse_depth = 1.0 / torch.where(corner_depth > near, corner_depth, torch.ones_like(corner_depth))
    return triangles, inverse_depth, double_area, valid


def front_facing(double_area: torch.Tensor) -> torch.Tensor:
    """True for triangles that face the camera, given ``double_area`` from ``project_faces``.

    For a triangle (P0, P1, P2) with normal n = (P1 - P0) x (P2 - P0), the projected signed area
    has the sign of det[P0, P1, P2] = P0 . n, which is negative when n points towards the camera.
    So with faces wound counter-clockwise seen from outside (outward normals, as MANO), the
    visible side of a closed mesh is exactly the set of triangles with a negative signed area.
    """
    return double_area < 0


@dataclass
class ProjectedMesh:
    """A batch of meshes checked and projected, ready to rasterize (from ``project_mesh``).

    Attributes:
        triangles: (B, F, 3, 2) pixel coordinates (u, v) of the three corners.
        inverse_depth: (B, F, 3) 1 / z of the three corners, 1 / metres.
        double_area: (B, F) signed area of the projected triangle times 2, pixels^2.
        valid: (B, F) bool, the triangles to draw: in front of the near plane, not degenerate,
            and facing the camera when back faces are culled.
        image_size: (H, W) in pixels.
    """

    triangles: torch.Tensor
    inverse_depth: torch.Tensor
    double_area: torch.Tensor
    valid: torch.Tensor
    image_size: tuple[int, int]


def project_mesh(vertices, faces, K, image_size, near: float, cull_backfaces: bool) -> ProjectedMesh:
    """Check the inputs (``check_mesh``, ``check_image_size``), project every triangle
    (``project_faces``) and mark those to draw: the first step of every rasterizer here.

    Args:
        vertices: (B, V, 3) camera frame, metres. faces: (F, 3) vertex indices.
        K: (3, 3) or (B, 3, 3) intrinsics, pixels. image_size: int or (H, W), pixels.
        near: metres, as in ``project_faces``. cull_backfaces: keep only ``front_facing`` triangles.
    """
    vertices, faces, K = check_mesh(vertices, faces, K)
    image_size = check_image_size(image_size)
    triangles, inverse_depth, double_area, valid = project_faces(vertices, faces, K, near)
    if cull_backfaces:
        valid = valid & front_facing(double_area)
    return ProjectedMesh(triangles, inverse_depth, double_area, valid, image_size)


def screen_barycentrics(triangles: torch.Tensor, double_area: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Barycentric coordinates of 2D points in 2D triangles, by edge functions.

    lambda_i(p) = E_i(p) / E_i(corner i), where E_i(p) = cross(c_k - c_j, p - c_j) is the edge
    function of the edge (j, k) opposite corner i; E_i(corner i) = twice the signed area.
    A point is inside (or on the border of) the triangle when all three are >= 0.

    Args:
        triangles: (..., 3, 2) corners in pixels. double_area: (...) from ``project_faces``.
        points: (..., 2) pixels; all three broadcast together.

    Returns:
        (..., 3) lambda_0, lambda_1, lambda_2; they sum to 1 (up to rounding).
    """
    start = triangles.roll(-1, dims=-2)  # (..., 3, 2) corner j = i + 1 of edge i
    edge = triangles.roll(-2, dims=-2) - start  # (..., 3, 2) c_k - c_j, with k = i + 2
    offset = points[..., None, :] - start  # (..., 3, 2) p - c_j
    edge_function = edge[..., 0] * offset[..., 1] - edge[..., 1] * offset[..., 0]  # (..., 3)
    return edge_function / double_area[..., None]


def perspective_correct(screen_weights: torch.Tensor, inverse_depth: torch.Tensor):
    """Barycentrics on the 3D triangle from barycentrics on its projection.

    Along a triangle's projection, 1 / z (not z) varies linearly:
    1 / z(p) = sum_i lambda_i / z_i, and the 3D barycentrics are b_i = (lambda_i / z_i) * z(p).

    Args:
        screen_weights: (..., 3) lambda from ``screen_barycentrics``.
        inverse_depth: (..., 3) 1 / z_i of the three corners.

    Returns:
        barycentrics: (..., 3), summing to 1. depth: (...), z(p) in metres.
    """
    weighted = screen_weights * inverse_depth  # (..., 3) lambda_i / z_i
    # Written out (not .sum) so that the fast path and the reference round identically.
    depth = 1.0 / (weighted[..., 0] + weighted[..., 1] + weighted[..., 2])  # (...)
    return weighted * depth[..., None], depth


def pixel_boxes(triangles: torch.Tensor, image_size: tuple[int, int], margin: float = 0.0):
    """The pixels whose centre lies in each triangle's bounding box (dilated by ``margin`` pixels).

    Pixel column x is in the box when its centre x + 0.5 lies in [u_min, u_max]; rows likewise.

    Args:
        triangles: (M, 3, 2) corners, pixels. image_size: (H, W).

    Returns:
        first: (M, 2) long, column and row of the box's first pixel (clipped to the image).
        size: (M, 2) long, its width and height in pixels (0 when outside the image).
    """
    height, width = image_size
    limit = torch.tensor([width, height], device=triangles.device)
    first = torch.ceil(triangles.amin(dim=1) - margin - 0.5).clamp(min=0).minimum(limit).long()  # (M, 2)
    last = torch.floor(triangles.amax(dim=1) + margin - 0.5).clamp(min=-1).minimum(limit - 1).long()  # (M, 2)
    return first, (last - first + 1).clamp_min(0)


def enumerate_pixels(size: torch.Tensor, keep: torch.Tensor):
    """List every (box, pixel) pair: the sparse fragments, for all boxes of all images at once.

    Args:
        size: (M, 2) long width and height of each box, from ``pixel_boxes``.
        keep: (M,) bool, boxes to enumerate at all.

    Returns:
        item: (N,) long, the box of each candidate (ascending).
        dx, dy: (N,) long, the candidate's column and row within its box (0 = first).
    """
    box_width, box_height = size[:, 0].contiguous(), size[:, 1]
    count = torch.where(keep, box_width * box_height, 0)  # (M,)
    total = int(count.sum())
    item = torch.repeat_interleave(torch.arange(len(count), device=size.device), count, output_size=total)  # (N,)
    # Candidate n is the local-th pixel of its box, row by row.
    first_of_item = torch.cumsum(count, 0) - count  # (M,) exclusive prefix sum
    local = torch.arange(total, device=size.device) - first_of_item.index_select(0, item)  # (N,)
    item_width = box_width.index_select(0, item)  # (N,)
    dy = torch.div(local, item_width, rounding_mode="floor")
    return item, local - dy * item_width, dy


def pixel_centres(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N,) integer columns and rows -> (N, 2) pixel-centre coordinates (x + 0.5, y + 0.5)."""
    return torch.stack([x, y], dim=-1).to(dtype) + 0.5


def depth_planes(triangles, inverse_depth, double_area, origin) -> torch.Tensor:
    """lambda_i / z_i as planes over the pixel grid, for the fast inside and depth tests.

    Each edge function is linear in the pixel position, so from the pixel centre ``origin``
    (the box's first pixel) a step of (dx, dy) pixels gives
        q_i(dx, dy) = lambda_i / z_i = Q_i + QX_i dx + QY_i dy,
    with E_i(origin) computed from coordinate differences (no cancellation). A pixel is inside
    when all q_i >= 0 (as z_i > 0), and 1 / z = q_0 + q_1 + q_2 (see ``perspective_correct``).

    Args:
        triangles: (M, 3, 2) pixels. inverse_depth: (M, 3). double_area: (M,). origin: (M, 2) pixels.

    Returns:
        (3, 3, M): [coefficient (Q, QX, QY), corner, triangle], each row contiguous.
    """
    start = triangles.roll(-1, dims=-2)  # (M, 3, 2) corner j = i + 1 of edge i
    edge = triangles.roll(-2, dims=-2) - start  # (M, 3, 2) c_k - c_j
    offset = origin[:, None, :] - start  # (M, 3, 2)
    at_origin = edge[..., 0] * offset[..., 1] - edge[..., 1] * offset[..., 0]  # (M, 3) E_i(origin)
    scale = inverse_depth / double_area[:, None]  # (M, 3) 1 / (2 area z_i)
    planes = torch.stack([at_origin * scale, -edge[..., 1] * scale, edge[..., 0] * scale])  # (3, M, 3)
    return planes.transpose(1, 2).contiguous()  # (3, 3, M)


def evaluate_planes(planes: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """q_i = Q_i + QX_i dx + QY_i dy for planes (3, 3, ...) and float steps dx, dy (...): (3, ...)."""
    return planes[0] + planes[1] * dx + planes[2] * dy


@torch.no_grad()
def planes_over_boxes(mesh: ProjectedMesh, corner_scale: torch.Tensor, margin: float = 0.0):
    """Each triangle's pixel box (``pixel_boxes``) and its scaled edge functions as planes over
    the box, with the origin at the centre of its first pixel (``depth_planes``). No autograd.

    Args:
        mesh: from ``project_mesh``.
        corner_scale: (B, F, 3) or (B*F, 3), what edge function i is multiplied by (divided by
            twice the area): ``mesh.inverse_depth`` gives the rasterizer's q_i = lambda_i / z_i.
        margin: pixels, dilation of the boxes.

    Returns:
        first: (B*F, 2) long, column and row of each box's first pixel.
        size: (B*F, 2) long, its width and height in pixels.
        planes: (3, 3, B*F) [coefficient (Q, QX, QY), corner, triangle].
    """
    triangles = mesh.triangles.reshape(-1, 3, 2)  # (B*F, 3, 2)
    first, size = pixel_boxes(triangles, mesh.image_size, margin)  # (B*F, 2) each
    planes = depth_planes(triangles, corner_scale.reshape(-1, 3), mesh.double_area.reshape(-1), first + 0.5)
    return first, size, planes


def candidate_pixels(item, dx, dy, first: torch.Tensor, num_faces: int, image_size: tuple[int, int]):
    """Where candidates (from ``enumerate_pixels``) lie in the batch of images.

    Args:
        item: (N,) long, the candidate's triangle, a row of the (B*F) triangles.
        dx, dy: (N,) long, its column and row within the triangle's box.
        first: (B*F, 2) long, the boxes' first pixels, from ``pixel_boxes``.
        num_faces: F. image_size: (H, W).

    Returns:
        x, y: (N,) long, pixel column and row. image: (N,) long, which image (b).
        pixel: (N,) long, flat index into (B*H*W).
    """
    height, width = image_size
    x = gather_last(first[:, 0], item) + dx  # (N,)
    y = gather_last(first[:, 1], item) + dy  # (N,)
    image = torch.div(item, num_faces, rounding_mode="floor")  # (N,)
    return x, y, image, (image * height + y) * width + x


def gather_last(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[..., index]`` for a table (..., M) and index (N,): (..., N). No autograd.

    Gathers one contiguous row at a time: on the CPU that is several times faster than a
    gather of rows of a few numbers each (``table.T[index]``).
    """
    rows = table.reshape(math.prod(table.shape[:-1]), table.shape[-1])  # (R, M)
    out = table.new_empty(rows.shape[0], len(index))
    for row, out_row in zip(rows, out):
        torch.index_select(row, 0, index, out=out_row)
    return out.view(*table.shape[:-1], len(index))


def _depth_key(depth: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """int64 z-buffer key: the bits of float32 depth in the high half, the face id in the low half.

    For positive floats, the IEEE-754 bit pattern read as an integer is ordered like the value,
    so the smallest key is the nearest face, and equal depths go to the smaller face id.
    """
    depth_bits = depth.detach().float().view(torch.int32).long()  # (N,) positive: depth > 0
    return (depth_bits << _FACE_ID_BITS) | face


def _fragments_from_zbuffer(zbuffer: torch.Tensor, mesh: ProjectedMesh) -> Fragments:
    """Step 5: decode the z-buffer keys; recompute depth and barycentrics with autograd."""
    triangles, inverse_depth, double_area = mesh.triangles, mesh.inverse_depth, mesh.double_area
    batch, num_faces = double_area.shape
    height, width = mesh.image_size
    covered = zbuffer != torch.iinfo(torch.int64).max  # (B*H*W,)
    pixel_index = covered.nonzero().squeeze(1)  # (N,)
    face = zbuffer.index_select(0, pixel_index) & ((1 << _FACE_ID_BITS) - 1)  # (N,) index into faces
    image = torch.div(pixel_index, height * width, rounding_mode="floor")  # (N,)
    within = pixel_index - image * (height * width)
    y = torch.div(within, width, rounding_mode="floor")
    centres = pixel_centres(within - y * width, y, triangles.dtype)  # (N, 2)

    item = image * num_faces + face  # (N,) row of the winning triangle in (B*F)
    corners = triangles.reshape(-1, 6).index_select(0, item).view(-1, 3, 2)  # (N, 3, 2)
    weights = screen_barycentrics(corners, double_area.reshape(-1).index_select(0, item), centres)  # (N, 3)
    bary, depth = perspective_correct(weights, inverse_depth.reshape(-1, 3).index_select(0, item))  # (N, 3), (N,)

    face_index = torch.full_like(zbuffer, -1).index_put_((pixel_index,), face)  # (B*H*W,)
    depth_image = triangles.new_zeros(len(zbuffer)).index_put((pixel_index,), depth)  # (B*H*W,)
    return Fragments(
        face_index=face_index.view(batch, height, width),
        depth=depth_image.view(batch, height, width),
        mask=covered.view(batch, height, width),
        pixel_index=pixel_index,
        covered_barycentrics=bary,
    )


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def rasterize(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    image_size,
    near: float = DEFAULT_NEAR,
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterize a batch of triangle meshes with a z-buffer.

    Args:
        vertices: (B, V, 3) camera frame (OpenCV: x right, y down, z forward), metres.
        faces: (F, 3) long vertex indices, shared by the batch.
        K: (3, 3) or (B, 3, 3) pinhole intrinsics, pixels.
        image_size: int or (H, W), pixels.
        near: metres; triangles with a vertex at z <= near (behind or too close to the camera)
            are dropped whole (no clipping).
        cull_backfaces: drop triangles that face away from the camera (``front_facing``). For a
            closed mesh wound counter-clockwise seen from outside this gives the same image,
            faster. Leave it off for open or inconsistently wound meshes.

    Returns:
        ``Fragments`` (face_index, depth, mask, pixel_index, covered_barycentrics, and the dense
        ``barycentrics``); depth and barycentrics are differentiable w.r.t. ``vertices`` (the
        visibility itself is not).

    Example:
        >>> K = torch.tensor([[100.0, 0, 8], [0, 100.0, 8], [0, 0, 1]])
        >>> triangle = torch.tensor([[[-0.05, -0.05, 1.0], [0.05, -0.05, 1.0], [-0.05, 0.05, 1.0]]])
        >>> rasterize(triangle, torch.tensor([[0, 1, 2]]), K, 16).mask.sum().item()  # 10 x 10 / 2 + diagonal
        55
    """
    # 1. Project: corners (B, F, 3, 2) in pixels, their 1 / z (B, F, 3), twice the signed area (B, F).
    mesh = project_mesh(vertices, faces, K, image_size, near, cull_backfaces)
    (batch, num_faces), (height, width) = mesh.valid.shape, mesh.image_size

    with torch.no_grad():
        # 2. Candidates: every pixel centre inside a triangle's bounding box, all images at once,
        # and the planes q_i = lambda_i / z_i over each box.
        first, size, planes = planes_over_boxes(mesh, mesh.inverse_depth)  # (B*F, 2), (B*F, 2), (3, 3, B*F)
        item, dx, dy = enumerate_pixels(size, mesh.valid.reshape(-1))  # (N,) each

        # 3. Inside test and depth at each candidate.
        q = evaluate_planes(gather_last(planes, item), dx.to(planes.dtype), dy.to(planes.dtype))  # (3, N)
        inside = ((q[0] >= 0) & (q[1] >= 0) & (q[2] >= 0)).nonzero().squeeze(1)  # (N',) covered candidates
        item, q = item.index_select(0, inside), gather_last(q, inside)  # (N',), (3, N')
        depth = 1.0 / (q[0] + q[1] + q[2])  # (N',) metres
        _, _, image, pixel = candidate_pixels(
            item, dx.index_select(0, inside), dy.index_select(0, inside), first, num_faces, mesh.image_size
        )  # (N',) each

        # 4. Z-buffer: the smallest key (depth, then face id) per pixel wins.
        zbuffer = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, device=vertices.device)
        zbuffer.scatter_reduce_(0, pixel, _depth_key(depth, item - image * num_faces), reduce="amin")

    # 5. Barycentrics and depth of the winners, differentiable w.r.t. the vertices.
    return _fragments_from_zbuffer(zbuffer, mesh)


def rasterize_reference(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    image_size,
    near: float = DEFAULT_NEAR,
    cull_backfaces: bool = False,
) -> Fragments:
    """The same as ``rasterize``, by brute force: every face against every pixel.

    It needs (B, F, H * W) memory and time, so use it on tiny images only: it is the reference
    that the tests compare ``rasterize`` with, and the plainest way to read the algorithm.
    Arguments and result are those of ``rasterize``.
    """
    mesh = project_mesh(vertices, faces, K, image_size, near, cull_backfaces)
    (batch, num_faces), (height, width) = mesh.valid.shape, mesh.image_size

    with torch.no_grad():
        # The same planes and the same arithmetic as the fast path, for every face and every pixel.
        first, _, planes = planes_over_boxes(mesh, mesh.inverse_depth)  # (B*F, 2), (3, 3, B*F)
        rows, columns = torch.meshgrid(
            torch.arange(height, device=vertices.device), torch.arange(width, device=vertices.device), indexing="ij"
        )
        dx = (columns.reshape(1, -1) - first[:, :1]).to(planes.dtype)  # (B*F, H*W)
        dy = (rows.reshape(1, -1) - first[:, 1:]).to(planes.dtype)
        q = evaluate_planes(planes[..., None], dx, dy)  # (3, B*F, H*W)
        inside = (q[0] >= 0) & (q[1] >= 0) & (q[2] >= 0) & mesh.valid.reshape(-1, 1)  # (B*F, H*W)
        depth = 1.0 / (q[0] + q[1] + q[2])  # (B*F, H*W)
        face_ids = torch.arange(num_faces, device=vertices.device).repeat(batch)[:, None].expand_as(depth)
        keys = torch.where(inside, _depth_key(depth, face_ids), torch.iinfo(torch.int64).max)
        zbuffer = keys.reshape(batch, num_faces, -1).amin(dim=1).reshape(-1)  # (B*H*W,)
    return _fragments_from_zbuffer(zbuffer, mesh)


def interpolate_covered(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-vertex attributes at the covered pixels only.

    a(p) = sum_i b_i(p) a_{v_i}, with b the perspective-correct barycentrics of the visible face.

    Args:
        attributes: (B, V, C) or (V, C) per-vertex values.
        faces: (F, 3) long, the faces that were rasterized.
        fragments: from ``rasterize``.

    Returns:
        (N, C) values at ``fragments.pixel_index`` (a transposed view of a (C, N) tensor).
    """
    if not isinstance(attributes, torch.Tensor) or attributes.ndim not in (2, 3):
        got = tuple(attributes.shape) if isinstance(attributes, torch.Tensor) else type(attributes).__name__
        raise ValueError(f"attributes: expected a tensor of shape (B, V, C) or (V, C), got {got}")
    batch, height, width = fragments.face_index.shape
    if attributes.ndim == 3 and attributes.shape[0] not in (1, batch):
        raise ValueError(f"attributes: expected a batch of 1 or {batch} (as the fragments), got {tuple(attributes.shape)}")
    faces = faces.to(device=attributes.device, dtype=torch.long)
    pixel_index = fragments.pixel_index  # (N,)
    face = fragments.face_index.reshape(-1).index_select(0, pixel_index)  # (N,)
    corner_vertex = faces.index_select(0, face)  # (N, 3)
    if attributes.ndim == 3 and attributes.shape[0] > 1:  # one mesh per image: rows of (B*V, C)
        image = torch.div(pixel_index, height * width, rounding_mode="floor")  # (N,)
        corner_vertex = corner_vertex + image[:, None] * attributes.shape[1]
    channels = attributes.reshape(-1, attributes.shape[-1]).T  # (C, B*V or V)
    # One channel at a time (fast on the CPU), then a_c(p) = sum_i b_i a_c(v_i).
    corner_vertex = corner_vertex.reshape(-1)  # (3N,)
    corner_values = torch.stack([channel.index_select(0, corner_vertex) for channel in channels])  # (C, 3N)
    corner_values = corner_values.view(len(channels), -1, 3)  # (C, N, 3)
    bary = fragments.covered_barycentrics.to(attributes.dtype)  # (N, 3)
    return (corner_values * bary).sum(dim=-1).T  # (N, C)


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-vertex attributes over the image (colours, normals, camera-frame points, ...).

    Args:
        attributes: (B, V, C) or (V, C) per-vertex values.
        faces: (F, 3) long, the faces that were rasterized.
        fragments: from ``rasterize``.

    Returns:
        (B, H, W, C); zero on the background. Differentiable w.r.t. the attributes and, through
        the barycentrics, the vertices.
    """
    values = interpolate_covered(attributes, faces, fragments)  # (N, C)
    batch, height, width = fragments.face_index.shape
    image = values.new_zeros(batch * height * width, values.shape[-1]).index_put((fragments.pixel_index,), values)
    return image.view(batch, height, width, -1)
