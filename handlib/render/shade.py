"""Shading: from fragments to an RGB image, with depth, mask and part labels alongside.

The shading model is Lambert's law plus an ambient term, per pixel:

    colour(p) = albedo(p) * (ambient + (1 - ambient) * max(0, n(p) . l))

where n(p) is the interpolated vertex normal (turned to face the camera, so both sides of a
surface are lit: "two-sided" lighting) and l the unit direction from the surface towards the
light, in the camera frame. The default light comes from just above and left of the camera.
``shade_covered`` is the per-pixel model itself, with a coloured light, separate ambient and
diffuse weights and an optional specular sheen (the synthetic data use all of them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from handlib.render.rasterize import DEFAULT_NEAR, Fragments, check_mesh, interpolate_covered, rasterize

SKIN_COLOR = (0.80, 0.62, 0.52)  # a default albedo, RGB in [0, 1]
DEFAULT_LIGHT_DIRECTION = (-0.3, -0.5, -1.0)  # camera frame: towards the upper left, back to the camera


@dataclass
class RenderOutput:
    """A rendered batch.

    Attributes:
        rgb: (B, 3, H, W) in [0, 1].
        depth: (B, H, W) metres (z in the camera frame), 0 on the background.
        mask: (B, H, W) float, 1 where the mesh is visible.
        face_index: (B, H, W) long, visible face, -1 on the background.
        part_labels: (B, H, W) long, the label of the visible vertex nearest in barycentric terms
            (the corner with the largest barycentric weight), -1 on the background;
            None when no ``vertex_labels`` were given.
        fragments: the ``Fragments`` it was shaded from (barycentrics, covered pixels, ...), for
            interpolating more per-vertex attributes with ``interpolate``.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    face_index: torch.Tensor
    part_labels: torch.Tensor | None = None
    fragments: Fragments | None = None


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals: the area-weighted mean of the normals of the faces around each vertex.

    The face normal (P1 - P0) x (P2 - P0) has length twice the face area, so summing the raw
    cross products weights each face by its area.

    Args:
        vertices: (B, V, 3). faces: (F, 3) long.

    Returns:
        (B, V, 3) unit normals (pointing outwards for faces wound counter-clockwise seen from
        outside); zero for vertices that belong to no face.
    """
    if not isinstance(vertices, torch.Tensor) or vertices.ndim != 3 or vertices.shape[-1] != 3:
        got = tuple(vertices.shape) if isinstance(vertices, torch.Tensor) else type(vertices).__name__
        raise ValueError(f"vertices: expected a tensor of shape (B, V, 3), got {got}")
    faces = faces.to(device=vertices.device, dtype=torch.long)
    corners = vertices.index_select(1, faces.reshape(-1)).view(vertices.shape[0], *faces.shape, 3)  # (B, F, 3, 3)
    face_normals = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)  # (B, V, 3)
    for corner in range(3):
        normals = normals.index_add(1, faces[:, corner], face_normals)
    length = (normals * normals).sum(dim=-1, keepdim=True).sqrt()  # (B, V, 1)
    return normals / length.clamp_min(1e-12)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last axis (cheaper than F.normalize for many 3-vectors)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True).clamp_min(1e-20))


def _per_pixel(value, image: torch.Tensor):
    """A float shared by the batch as it is; a tensor (B,) with one value per image -> (N, 1) at the pixels."""
    return value[image, None] if isinstance(value, torch.Tensor) else value


def shade_covered(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    fragments: Fragments,
    albedo: torch.Tensor,
    light: torch.Tensor,
    ambient,
    diffuse,
    specular=None,
    light_color: torch.Tensor | None = None,
    albedo_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shade the covered pixels, two-sided Lambert + ambient and an optional Blinn-Phong sheen:

        colour(p) = albedo(p) * c * (ambient + diffuse * max(0, n.l)) + specular * c * max(0, n.h)^24

    with c the light's colour, n the unit normal turned towards the camera, l the unit direction
    towards the light and h = unit(l - unit(p)) halfway between the light and the viewer, p being
    the surface point. Per-pixel arithmetic only (products, sums, sqrt, no pow), so each pixel's
    value does not depend on the batch it is rendered in (the synthetic data rely on it).

    With several lights (``light`` of shape (B, L, 3)) the first is the key light: the ambient
    term and the sheen take its colour c_0, and each light adds its own diffuse term,

        colour(p) = albedo(p) * (c_0 ambient + sum_l c_l diffuse_l max(0, n.l_l)) + specular * c_0 max(0, n.h_0)^24

    (a light from behind the surface, n.l_l > 0 only near the silhouette, is a rim light).

    Args:
        vertices: (B, V, 3) camera frame, metres. faces: (F, 3) long.
        fragments: from ``rasterize(vertices, faces, ...)``.
        albedo: (B, V, 3) or (1, V, 3) per-vertex RGB in [0, 1].
        light: (3,) or (B, 3) unit direction from the surface towards the light, camera frame;
            or (B, L, 3) for L lights.
        ambient, diffuse: floats, or (B,) tensors with one value per image; with L lights,
            ``diffuse`` is (B, L), one weight per light.
        specular: None (no sheen), a float or (B,), the weight of the sheen.
        light_color: None (white) or (3,) / (B, 3) RGB; (B, L, 3) with L lights.
        albedo_scale: None, or (N, 1) / (N, 3) factors multiplying the interpolated albedo at
            each covered pixel (detail finer than the mesh: skin creases, say).

    Returns:
        (N, 3) colours in [0, 1] of the covered pixels (``fragments.pixel_index``).
    """
    batch, height, width = fragments.face_index.shape
    image = torch.div(fragments.pixel_index, height * width, rounding_mode="floor")  # (N,)
    normals = vertex_normals(vertices, faces)  # (B, V, 3)
    attributes = torch.cat([vertices, normals, albedo.expand(*vertices.shape)], dim=-1)  # (B, V, 9)
    points, normal, color = interpolate_covered(attributes, faces, fragments).split(3, dim=-1)  # (N, 3) each
    if albedo_scale is not None:
        color = color * albedo_scale
    normal = _unit(normal)
    normal = normal * torch.where((normal * points).sum(-1, keepdim=True) > 0, -1.0, 1.0)  # face the camera
    lights = light.expand(batch, 3)[:, None] if light.ndim < 3 else light  # (B, L, 3)
    colors = None if light_color is None else (light_color.expand(batch, 3)[:, None] if light_color.ndim < 3
                                               else light_color)  # (B, L, 3)
    weights = diffuse if light.ndim < 3 else None
    key_color = None if colors is None else colors[:, 0][image]  # (N, 3)
    shaded = color * _per_pixel(ambient, image) * (1.0 if key_color is None else key_color)  # (N, 3)
    for index in range(lights.shape[1]):
        to_light = lights[:, index][image]  # (N, 3)
        lambert = (normal * to_light).sum(-1, keepdim=True).clamp_min(0)  # (N, 1) cos of the angle of incidence
        weight = _per_pixel(weights if weights is not None else diffuse[:, index], image) * lambert  # (N, 1)
        shaded = shaded + color * (weight if colors is None else weight * colors[:, index][image])
        if specular is not None and index == 0:
            half = _unit(to_light - _unit(points))  # (N, 3) halfway between the light and the viewer
            sheen = (normal * half).sum(-1, keepdim=True).clamp_min(0)  # (N, 1)
            sheen = sheen.square().square().square()  # ^8, by exact products (no pow)
            sheen = _per_pixel(specular, image) * (sheen * sheen * sheen)  # ^24
            key_sheen = sheen if key_color is None else sheen * key_color
    if specular is not None:
        shaded = shaded + key_sheen
    return shaded.clamp(0, 1)


def _per_vertex(values, name: str, batch: int, num_vertices: int, reference: torch.Tensor) -> torch.Tensor:
    """Colours given as (3,), (V, 3) or (B, V, 3) -> (B or 1, V, 3)."""
    values = torch.as_tensor(values, dtype=reference.dtype, device=reference.device)
    if values.shape == (3,):
        return values.expand(1, num_vertices, 3)
    if values.shape == (num_vertices, 3):
        return values[None]
    if values.ndim == 3 and values.shape[0] in (1, batch) and values.shape[1:] == (num_vertices, 3):
        return values
    raise ValueError(
        f"{name}: expected an RGB colour (3,), per-vertex colours ({num_vertices}, 3) or ({batch}, {num_vertices}, 3), "
        f"got {tuple(values.shape)}"
    )


def _background_image(background, batch: int, height: int, width: int, reference: torch.Tensor) -> torch.Tensor:
    """Background as None (black), a colour (3,), or an image (3, H, W) / (B, 3, H, W) -> (B, 3, H, W)."""
    if background is None:
        return reference.new_zeros(batch, 3, height, width)
    background = torch.as_tensor(background, dtype=reference.dtype, device=reference.device)
    if background.shape == (3,):
        return background[:, None, None].expand(batch, 3, height, width).contiguous()
    if background.shape in ((3, height, width), (1, 3, height, width), (batch, 3, height, width)):
        return background.expand(batch, 3, height, width).contiguous()
    raise ValueError(
        f"background: expected None, a colour (3,) or an image (3, {height}, {width}) / ({batch}, 3, {height}, {width}), "
        f"got {tuple(background.shape)}"
    )


def render(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    image_size,
    vertex_colors=None,
    light_direction=DEFAULT_LIGHT_DIRECTION,
    ambient: float = 0.4,
    background=None,
    vertex_labels: torch.Tensor | None = None,
    near: float = DEFAULT_NEAR,
    cull_backfaces: bool = False,
) -> RenderOutput:
    """Render RGB (Lambert + ambient), depth, mask and part labels of a batch of meshes.

    Args:
        vertices: (B, V, 3) camera frame (OpenCV), metres.
        faces: (F, 3) long, shared by the batch.
        K: (3, 3) or (B, 3, 3) intrinsics, pixels.
        image_size: int or (H, W), pixels.
        vertex_colors: albedo in [0, 1]: (3,) for the whole mesh, (V, 3) or (B, V, 3) per vertex;
            default ``SKIN_COLOR``.
        light_direction: (3,) or (B, 3), direction from the surface towards the light, camera
            frame (normalised here). The default lights from the upper left of the camera.
        ambient: fraction of the albedo seen without direct light, in [0, 1].
        background: None (black), a colour (3,), or an image (3, H, W) or (B, 3, H, W) in [0, 1].
        vertex_labels: optional (V,) or (B, V) integer label per vertex (e.g. the hand part);
            each pixel takes the label of the corner of its face with the largest barycentric
            weight (the nearest corner), so labels stay integers and borders follow the mesh.
        near, cull_backfaces: as in ``rasterize``.

    Returns:
        ``RenderOutput`` (rgb, depth, mask, face_index, part_labels, fragments). rgb and depth
        are differentiable w.r.t. vertices and colours inside the mask (not at its border).

    Example:
        >>> K = torch.tensor([[100.0, 0, 8], [0, 100.0, 8], [0, 0, 1]])
        >>> triangle = torch.tensor([[[-0.05, -0.05, 1.0], [0.05, -0.05, 1.0], [-0.05, 0.05, 1.0]]])
        >>> render(triangle, torch.tensor([[0, 1, 2]]), K, 16).rgb.shape
        torch.Size([1, 3, 16, 16])
    """
    vertices, faces, K = check_mesh(vertices, faces, K)
    batch, num_vertices = vertices.shape[:2]
    if not 0.0 <= ambient <= 1.0:
        raise ValueError(f"ambient: expected a fraction in [0, 1], got {ambient}")
    albedo = _per_vertex(SKIN_COLOR if vertex_colors is None else vertex_colors, "vertex_colors", batch, num_vertices, vertices)
    light = torch.as_tensor(light_direction, dtype=vertices.dtype, device=vertices.device)
    if light.shape not in ((3,), (batch, 3)):
        raise ValueError(f"light_direction: expected shape (3,) or ({batch}, 3), got {tuple(light.shape)}")
    light = torch.nn.functional.normalize(light, dim=-1)  # (3,) or (B, 3) towards the light

    fragments = rasterize(vertices, faces, K, image_size, near=near, cull_backfaces=cull_backfaces)
    height, width = fragments.image_size
    pixel_index = fragments.pixel_index  # (N,) covered pixels
    image = torch.div(pixel_index, height * width, rounding_mode="floor")  # (N,) which image
    shaded = shade_covered(vertices, faces, fragments, albedo, light, ambient, 1 - ambient)  # (N, 3)

    # Write the shaded pixels over the background: channel c of pixel p is at p + (2 b + c) H W
    # in the flattened (B, 3, H, W) image, b being p's image.
    rgb = _background_image(background, batch, height, width, vertices)  # (B, 3, H, W)
    channel = torch.arange(3, device=vertices.device)  # (3,)
    flat = (pixel_index + image * (2 * height * width))[:, None] + channel * (height * width)  # (N, 3)
    rgb = rgb.view(-1).index_put((flat.reshape(-1),), shaded.reshape(-1)).view(batch, 3, height, width)

    part_labels = None
    if vertex_labels is not None:
        part_labels = _part_labels(vertex_labels, faces, fragments, batch, num_vertices)
    return RenderOutput(
        rgb=rgb,
        depth=fragments.depth,
        mask=fragments.mask.to(vertices.dtype),
        face_index=fragments.face_index,
        part_labels=part_labels,
        fragments=fragments,
    )


def _part_labels(vertex_labels, faces, fragments, batch: int, num_vertices: int) -> torch.Tensor:
    """Per-pixel label of the face corner with the largest barycentric weight; -1 on the background."""
    labels = torch.as_tensor(vertex_labels, device=faces.device)
    if labels.is_floating_point() or labels.shape not in ((num_vertices,), (1, num_vertices), (batch, num_vertices)):
        raise ValueError(
            f"vertex_labels: expected integer labels of shape ({num_vertices},) or ({batch}, {num_vertices}), "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    labels = labels.long().reshape(-1, num_vertices)  # (B or 1, V)
    height, width = fragments.image_size
    pixel_index = fragments.pixel_index
    face = fragments.face_index.reshape(-1)[pixel_index]  # (N,)
    nearest_corner = fragments.covered_barycentrics.argmax(dim=-1)  # (N,)
    vertex = faces[face, nearest_corner]  # (N,)
    image = torch.div(pixel_index, height * width, rounding_mode="floor") if labels.shape[0] > 1 else 0
    out = torch.full((batch * height * width,), -1, dtype=torch.long, device=faces.device)
    out[pixel_index] = labels[image, vertex]
    return out.view(batch, height, width)
