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
4. Z-buffer: per pixel, keep the candidate with the smallest depth, with one ``scatter_reduce``
   ("amin") over an int64 key (depth bits << 32 | face id). The key makes the result
   deterministic: equal depths are broken by the smaller face id.
5. Recompute the barycentrics of the winning triangle at each covered pixel, with autograd on,
   so they (and the depth) are differentiable with respect to the vertices.

Pixel centres are at (x + 0.5, y + 0.5), the convention of ``handlib.geometry.project_points``
and ``handlib.render.camera``: a point projecting to u = 10.5 lies at the centre of column 10.

``rasterize_reference`` does the same by brute force (every face against every pixel); it is
slow and exists to check the fast path and to read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from handlib.geometry import project_points

DEFAULT_NEAR = 0.01  # metres: triangles with a vertex nearer than this (or behind the camera) are dropped
_MIN_DOUBLE_AREA = 1e-12  # pixels^2: triangles with a smaller (twice) area are degenerate and dropped
_FACE_ID_BITS = 32  # the low 32 bits of a z-buffer key hold the face id


@dataclass
class Fragments:
    """What the rasterizer found at each pixel.

    Attributes:
        face_index: (B, H, W) long, index into ``faces`` of the visible triangle; -1 = background.
        depth: (B, H, W), z of the visible surface, metres, camera frame; 0 on the background.
        barycentrics: (B, H, W, 3) perspective-correct barycentric coordinates of the visible point
            on its triangle (they sum to 1; zero on the background). Differentiable w.r.t. vertices.
        mask: (B, H, W) bool, True where a triangle is visible.
        pixel_index: (N,) long, the covered pixels as flat indices into (B * H * W), ascending.
            ``interpolate`` uses it to work on covered pixels only.
    """

    face_index: torch.Tensor
    depth: torch.Tensor
    barycentrics: torch.Tensor
    mask: torch.Tensor
    pixel_index: torch.Tensor

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return tuple(self.face_index.shape[1:])


# ------------------------------------------------------------------------------------------------
# Input checks shared by the rasterizer, the shader and the soft silhouette
# ------------------------------------------------------------------------------------------------


def check_image_size(image_size) -> tuple[int, int]:
    """``image_size`` as (H, W): an int n means (n, n). Raises ValueError otherwise."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    try:
        height, width = (int(s) for s in image_size)
        ok = all(int(s) == s for s in image_size) and height > 0 and width > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"image_size: expected a positive int or (H, W), got {image_size!r}")
    return height, width


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
    triangles = pixels[:, faces]  # (B, F, 3, 2)
    corner_depth = depth[:, faces]  # (B, F, 3)
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


def enumerate_pixels(boxes: torch.Tensor, keep: torch.Tensor, image_size: tuple[int, int]):
    """List every (item, pixel) pair with the pixel centre inside the item's box: the sparse fragments.

    Pixel column x is listed when its centre x + 0.5 lies in [u_min, u_max]; rows likewise.

    Args:
        boxes: (M, 4) u_min, v_min, u_max, v_max in pixels, one per item (a triangle of one image).
        keep: (M,) bool, items to enumerate at all.
        image_size: (H, W).

    Returns:
        item: (N,) long index of the item of each candidate. x, y: (N,) long pixel column and row.
    """
    height, width = image_size
    # First and last pixel index whose centre lies in the box, clipped to the image.
    x_first = torch.ceil(boxes[:, 0] - 0.5).clamp(0, width).long()  # (M,)
    y_first = torch.ceil(boxes[:, 1] - 0.5).clamp(0, height).long()
    x_last = torch.floor(boxes[:, 2] - 0.5).clamp(-1, width - 1).long()
    y_last = torch.floor(boxes[:, 3] - 0.5).clamp(-1, height - 1).long()
    box_width = (x_last - x_first + 1).clamp_min(0)  # (M,)
    box_height = (y_last - y_first + 1).clamp_min(0)
    count = torch.where(keep, box_width * box_height, torch.zeros_like(box_width))  # (M,)
    # Candidate n belongs to item[n] and is the local-th pixel of that item's box, row by row.
    total = int(count.sum())
    item = torch.repeat_interleave(torch.arange(len(count), device=boxes.device), count, output_size=total)  # (N,)
    first_of_item = torch.cumsum(count, 0) - count  # (M,) exclusive prefix sum
    local = torch.arange(total, device=boxes.device) - first_of_item[item]  # (N,)
    item_width = box_width[item]
    x = x_first[item] + local % item_width  # (N,)
    y = y_first[item] + torch.div(local, item_width, rounding_mode="floor")  # (N,)
    return item, x, y


def pixel_centres(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N,) integer columns and rows -> (N, 2) pixel-centre coordinates (x + 0.5, y + 0.5)."""
    return torch.stack([x, y], dim=-1).to(dtype) + 0.5


def _depth_key(depth: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """int64 z-buffer key: the bits of float32 depth in the high half, the face id in the low half.

    For positive floats, the IEEE-754 bit pattern read as an integer is ordered like the value,
    so the smallest key is the nearest face, and equal depths go to the smaller face id.
    """
    depth_bits = depth.detach().float().view(torch.int32).long()  # (N,) positive: depth > 0
    return (depth_bits << _FACE_ID_BITS) | face


def _fragments_from_winners(
    zbuffer, triangles, inverse_depth, double_area, batch, faces_count, image_size
) -> Fragments:
    """Step 5: decode the z-buffer keys and recompute depth and barycentrics with autograd."""
    height, width = image_size
    covered = zbuffer != torch.iinfo(torch.int64).max  # (B*H*W,)
    pixel_index = covered.nonzero().squeeze(1)  # (N,)
    face = zbuffer[pixel_index] & ((1 << _FACE_ID_BITS) - 1)  # (N,) index into faces
    image = torch.div(pixel_index, height * width, rounding_mode="floor")  # (N,)
    within = pixel_index - image * height * width
    y = torch.div(within, width, rounding_mode="floor")
    x = within - y * width
    centres = pixel_centres(x, y, triangles.dtype)  # (N, 2)
    weights = screen_barycentrics(triangles[image, face], double_area[image, face], centres)  # (N, 3)
    bary, depth = perspective_correct(weights, inverse_depth[image, face])  # (N, 3), (N,)

    pixels = batch * height * width
    face_index = torch.full((pixels,), -1, dtype=torch.long, device=zbuffer.device)
    face_index[pixel_index] = face
    depth_image = triangles.new_zeros(pixels).index_put((pixel_index,), depth)  # (B*H*W,)
    bary_image = triangles.new_zeros(pixels, 3).index_put((pixel_index,), bary)  # (B*H*W, 3)
    return Fragments(
        face_index=face_index.view(batch, height, width),
        depth=depth_image.view(batch, height, width),
        barycentrics=bary_image.view(batch, height, width, 3),
        mask=covered.view(batch, height, width),
        pixel_index=pixel_index,
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
            about twice as fast. Leave it off for open or inconsistently wound meshes.

    Returns:
        ``Fragments`` (face_index, depth, barycentrics, mask, pixel_index); depth and barycentrics
        are differentiable w.r.t. ``vertices`` (the visibility itself is not).

    Example:
        >>> K = torch.tensor([[100.0, 0, 8], [0, 100.0, 8], [0, 0, 1]])
        >>> triangle = torch.tensor([[[-0.05, -0.05, 1.0], [0.05, -0.05, 1.0], [-0.05, 0.05, 1.0]]])
        >>> rasterize(triangle, torch.tensor([[0, 1, 2]]), K, 16).mask.sum().item()  # 10 x 10 / 2 + diagonal
        55
    """
    vertices, faces, K = check_mesh(vertices, faces, K)
    height, width = check_image_size(image_size)
    batch, num_faces = vertices.shape[0], faces.shape[0]

    # 1. Project: corners (B, F, 3, 2) in pixels, their 1 / z (B, F, 3), twice the signed area (B, F).
    triangles, inverse_depth, double_area, valid = project_faces(vertices, faces, K, near)
    if cull_backfaces:
        valid = valid & front_facing(double_area)

    with torch.no_grad():
        # 2. Candidates: every pixel centre inside a triangle's bounding box, all images at once.
        flat_triangles = triangles.detach().reshape(batch * num_faces, 3, 2)  # (B*F, 3, 2)
        boxes = torch.cat([flat_triangles.amin(dim=1), flat_triangles.amax(dim=1)], dim=1)  # (B*F, 4)
        item, x, y = enumerate_pixels(boxes, valid.reshape(-1), (height, width))  # (N,) each

        # 3. Inside test with the edge functions; depth at the pixel centre.
        flat_area = double_area.detach().reshape(-1)
        weights = screen_barycentrics(flat_triangles[item], flat_area[item], pixel_centres(x, y, triangles.dtype))
        inside = (weights >= 0).all(dim=-1)  # (N,)
        item, x, y, weights = item[inside], x[inside], y[inside], weights[inside]
        _, depth = perspective_correct(weights, inverse_depth.detach().reshape(-1, 3)[item])  # (N,)

        # 4. Z-buffer: the smallest key (depth, then face id) per pixel wins.
        image = torch.div(item, num_faces, rounding_mode="floor")  # (N,)
        face = item - image * num_faces  # (N,)
        pixel = (image * height + y) * width + x  # (N,) flat index into (B*H*W)
        zbuffer = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, device=vertices.device)
        zbuffer.scatter_reduce_(0, pixel, _depth_key(depth, face), reduce="amin")

    # 5. Barycentrics and depth of the winners, differentiable w.r.t. the vertices.
    return _fragments_from_winners(zbuffer, triangles, inverse_depth, double_area, batch, num_faces, (height, width))


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
    vertices, faces, K = check_mesh(vertices, faces, K)
    height, width = check_image_size(image_size)
    batch, num_faces = vertices.shape[0], faces.shape[0]
    triangles, inverse_depth, double_area, valid = project_faces(vertices, faces, K, near)
    if cull_backfaces:
        valid = valid & front_facing(double_area)

    with torch.no_grad():
        rows, columns = torch.meshgrid(
            torch.arange(height, device=vertices.device), torch.arange(width, device=vertices.device), indexing="ij"
        )
        centres = pixel_centres(columns.reshape(-1), rows.reshape(-1), triangles.dtype)  # (H*W, 2)
        # Every face (B, F, 1, ...) against every pixel (1, 1, H*W, 2).
        weights = screen_barycentrics(
            triangles.detach()[:, :, None], double_area.detach()[:, :, None], centres[None, None]
        )  # (B, F, H*W, 3)
        _, depth = perspective_correct(weights, inverse_depth.detach()[:, :, None])  # (B, F, H*W)
        inside = (weights >= 0).all(dim=-1) & valid[:, :, None]  # (B, F, H*W)
        face_ids = torch.arange(num_faces, device=vertices.device)[None, :, None].expand_as(depth)
        keys = torch.where(inside, _depth_key(depth, face_ids), torch.iinfo(torch.int64).max)
        zbuffer = keys.amin(dim=1).reshape(-1)  # (B*H*W,)
    return _fragments_from_winners(zbuffer, triangles, inverse_depth, double_area, batch, num_faces, (height, width))


def interpolate_covered(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-vertex attributes at the covered pixels only.

    a(p) = sum_i b_i(p) a_{v_i}, with b the perspective-correct barycentrics of the visible face.

    Args:
        attributes: (B, V, C) or (V, C) per-vertex values.
        faces: (F, 3) long, the faces that were rasterized.
        fragments: from ``rasterize``.

    Returns:
        (N, C) values at ``fragments.pixel_index``.
    """
    if not isinstance(attributes, torch.Tensor) or attributes.ndim not in (2, 3):
        got = tuple(attributes.shape) if isinstance(attributes, torch.Tensor) else type(attributes).__name__
        raise ValueError(f"attributes: expected a tensor of shape (B, V, C) or (V, C), got {got}")
    batch, height, width = fragments.face_index.shape
    if attributes.ndim == 3 and attributes.shape[0] not in (1, batch):
        raise ValueError(f"attributes: expected a batch of 1 or {batch} (as the fragments), got {tuple(attributes.shape)}")
    faces = faces.to(device=attributes.device, dtype=torch.long)
    pixel_index = fragments.pixel_index
    face = fragments.face_index.reshape(-1)[pixel_index]  # (N,)
    corner_vertices = faces[face]  # (N, 3)
    if attributes.ndim == 2:
        corner_values = attributes[corner_vertices]  # (N, 3, C)
    else:
        image = torch.div(pixel_index, height * width, rounding_mode="floor") if attributes.shape[0] > 1 else 0
        corner_values = attributes[torch.as_tensor(image, device=attributes.device).reshape(-1, 1), corner_vertices]
    bary = fragments.barycentrics.reshape(-1, 3)[pixel_index].to(attributes.dtype)  # (N, 3)
    return (bary[..., None] * corner_values).sum(dim=1)  # (N, C)


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
