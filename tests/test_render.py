"""Tests of handlib.render: the z-buffer rasterizer, shading, cameras and the soft silhouette.

The meshes are built here (a triangle, a square, a UV sphere), so the tests need no hand model.
Known values are worked out by hand in the comments.
"""
import math

import pytest
import torch

from handlib.geometry import axis_angle_to_matrix, project_points
from handlib.render import (
    crop_intrinsics,
    interpolate,
    make_intrinsics,
    place_in_front,
    rasterize,
    rasterize_reference,
    render,
    soft_silhouette,
    soft_silhouette_reference,
    vertex_normals,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
TRIANGLE = torch.tensor([[0, 1, 2]])


def uv_sphere(rings: int = 8, segments: int = 12, radius: float = 1.0, dtype=torch.float32):
    """A closed sphere, faces wound counter-clockwise seen from outside: (V, 3), (F, 3)."""
    polar = torch.arange(1, rings, dtype=torch.float64) * math.pi / rings  # (rings - 1,)
    azimuth = torch.arange(segments, dtype=torch.float64) * 2 * math.pi / segments
    polar, azimuth = torch.meshgrid(polar, azimuth, indexing="ij")
    ring_points = torch.stack(
        [polar.sin() * azimuth.cos(), polar.sin() * azimuth.sin(), polar.cos()], dim=-1
    ).reshape(-1, 3)
    vertices = torch.cat([torch.tensor([[0.0, 0, 1]], dtype=torch.float64), ring_points, torch.tensor([[0.0, 0, -1]], dtype=torch.float64)])
    bottom = len(vertices) - 1

    def ring(r, s):  # vertex index of ring r (0-based), segment s
        return 1 + r * segments + s % segments

    faces = []
    for s in range(segments):
        faces.append([0, ring(0, s), ring(0, s + 1)])
        faces.append([bottom, ring(rings - 2, s + 1), ring(rings - 2, s)])
        for r in range(rings - 2):
            faces.append([ring(r, s), ring(r + 1, s), ring(r + 1, s + 1)])
            faces.append([ring(r, s), ring(r + 1, s + 1), ring(r, s + 1)])
    return (vertices * radius).to(dtype), torch.tensor(faces)


def sphere_scene(batch: int = 2, size: int = 24, dtype=torch.float32, seed: int = 0):
    """A batch of randomly rotated, squashed spheres 0.5 m in front of a camera with f = 1.6 W."""
    generator = torch.Generator().manual_seed(seed)
    vertices, faces = uv_sphere(dtype=torch.float64)
    vertices = vertices * torch.tensor([0.06, 0.04, 0.05], dtype=torch.float64)  # an ellipsoid, metres
    rotations = axis_angle_to_matrix(torch.randn(batch, 3, generator=generator, dtype=torch.float64))
    vertices = vertices @ rotations.transpose(1, 2) + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    K = make_intrinsics(1.6 * size, size / 2, size / 2, dtype=dtype)
    return vertices.to(dtype), faces, K


def test_sphere_is_wound_outwards():
    vertices, faces = uv_sphere()
    corners = vertices[faces].double()  # (F, 3, 3)
    # Signed volume = sum of det[P0, P1, P2] / 6: positive for outward normals, ~ 4/3 pi for a unit sphere.
    volume = torch.linalg.det(corners).sum() / 6
    assert 3.0 < volume < 4 / 3 * math.pi


def test_square_covers_exactly_its_pixels():
    # A 0.32 m x 0.32 m square at z = 1 m with f = 100 px spans u, v in [8, 40]: pixel centres
    # 8.5 ... 39.5 are inside, so exactly 32 x 32 pixels, at depth 1 m.
    K = make_intrinsics(100.0, 24.0, 24.0)
    square = torch.tensor([[[-0.16, -0.16, 1.0], [0.16, -0.16, 1.0], [0.16, 0.16, 1.0], [-0.16, 0.16, 1.0]]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    fragments = rasterize(square, faces, K, 48)
    assert fragments.mask.sum().item() == 32 * 32
    assert fragments.mask[0, 8:40, 8:40].all()
    assert torch.allclose(fragments.depth[fragments.mask], torch.tensor(1.0))
    assert (fragments.depth[~fragments.mask] == 0).all() and (fragments.face_index[~fragments.mask] == -1).all()


def test_mask_area_matches_triangle_area():
    # A right triangle with legs of 40.3 px has an area of 812.045 px^2; pixel counting is exact
    # up to the pixels cut by its border (perimeter ~ 137.6 px, so within ~ half of that).
    K = make_intrinsics(100.0, 32.0, 32.0)
    triangle = torch.tensor([[[-0.2, -0.2, 1.0], [0.203, -0.2, 1.0], [-0.2, 0.203, 1.0]]])
    area = rasterize(triangle, TRIANGLE, K, 64).mask.sum().item()
    assert abs(area - 0.5 * 40.3**2) < 40


def test_depth_is_the_plane_depth():
    # Plane through the triangle: z = 0.6 + 0.5 x. The ray through pixel (u, v) is d = K^-1 [u, v, 1]
    # (d_z = 1), so it meets the plane at z = 0.6 / (1 - 0.5 d_x).
    K = make_intrinsics(60.0, 16.0, 16.0)
    xy = torch.tensor([[-0.3, -0.3], [0.35, -0.2], [0.0, 0.35]])
    triangle = torch.cat([xy, (0.6 + 0.5 * xy[:, :1])], dim=1)[None]  # (1, 3, 3)
    fragments = rasterize(triangle, TRIANGLE, K, 32)
    rows, columns = torch.nonzero(fragments.mask[0], as_tuple=True)
    direction_x = (columns + 0.5 - 16.0) / 60.0
    expected = 0.6 / (1 - 0.5 * direction_x)
    assert len(rows) > 100
    assert torch.allclose(fragments.depth[0, rows, columns], expected, atol=1e-6, rtol=1e-5)


def test_barycentrics_are_perspective_correct():
    # A triangle with strongly varying depth: interpolating its camera-frame corners with the
    # barycentrics must give points on the rays through the pixel centres (x + 0.5, y + 0.5).
    K = make_intrinsics(50.0, 16.0, 16.0)
    triangle = torch.tensor([[[-0.2, -0.25, 0.5], [0.8, -0.1, 2.0], [-0.1, 0.6, 1.2]]])
    fragments = rasterize(triangle, TRIANGLE, K, 32)
    mask = fragments.mask
    assert mask.sum() > 100
    assert torch.allclose(fragments.barycentrics[mask].sum(-1), torch.tensor(1.0), atol=1e-6)
    assert (fragments.barycentrics[mask] >= -1e-6).all()
    points = interpolate(triangle, TRIANGLE, fragments)  # (1, H, W, 3)
    rows, columns = torch.nonzero(mask[0], as_tuple=True)
    pixels = project_points(points[0, rows, columns], K)  # (N, 2)
    centres = torch.stack([columns, rows], dim=-1) + 0.5
    assert (pixels - centres).abs().max() < 1e-3
    assert torch.allclose(points[0, rows, columns, 2], fragments.depth[0, rows, columns], rtol=1e-5)


def test_nearer_triangle_wins_whatever_the_order():
    K = make_intrinsics(40.0, 8.0, 8.0)
    near_triangle = [[-0.1, -0.1, 0.5], [0.1, -0.1, 0.5], [-0.1, 0.1, 0.5]]  # covers the upper left
    far_triangle = [[-0.4, -0.4, 1.0], [0.4, -0.4, 1.0], [0.4, 0.4, 1.0]]  # larger, behind it
    vertices = torch.tensor([near_triangle + far_triangle])
    for faces, near_id in [(torch.tensor([[0, 1, 2], [3, 4, 5]]), 0), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 1)]:
        fragments = rasterize(vertices, faces, K, 16)
        near_mask = rasterize(vertices, faces[near_id : near_id + 1], K, 16).mask
        far_mask = rasterize(vertices, faces[1 - near_id : 2 - near_id], K, 16).mask
        assert (near_mask & far_mask).sum() > 10  # they do overlap
        assert (fragments.face_index[near_mask] == near_id).all()
        assert torch.allclose(fragments.depth[near_mask], torch.tensor(0.5))
        assert (fragments.face_index[far_mask & ~near_mask] == 1 - near_id).all()
        assert torch.allclose(fragments.depth[far_mask & ~near_mask], torch.tensor(1.0))


def test_triangles_behind_the_camera_are_dropped():
    K = make_intrinsics(40.0, 8.0, 8.0)
    behind = torch.tensor([[[-0.1, -0.1, -0.5], [0.1, -0.1, -0.5], [-0.1, 0.1, -0.5]]])
    crossing = torch.tensor([[[-0.1, -0.1, -0.5], [0.1, -0.1, 0.5], [-0.1, 0.1, 0.5]]])
    assert not rasterize(behind, TRIANGLE, K, 16).mask.any()
    assert not rasterize(crossing, TRIANGLE, K, 16).mask.any()


@pytest.mark.parametrize("cull_backfaces", [False, True])
def test_fast_path_equals_brute_force_exactly(cull_backfaces):
    vertices, faces, K = sphere_scene(batch=3, size=24)
    fast = rasterize(vertices, faces, K, (24, 20), cull_backfaces=cull_backfaces)
    reference = rasterize_reference(vertices, faces, K, (24, 20), cull_backfaces=cull_backfaces)
    assert fast.mask.sum() > 100
    assert torch.equal(fast.face_index, reference.face_index)
    assert torch.equal(fast.depth, reference.depth)
    assert torch.equal(fast.barycentrics, reference.barycentrics)
    assert torch.equal(fast.pixel_index, reference.pixel_index)


def test_culling_keeps_the_image_of_a_closed_mesh():
    vertices, faces, K = sphere_scene(batch=3, size=32)
    culled = rasterize(vertices, faces, K, 32, cull_backfaces=True)
    full = rasterize(vertices, faces, K, 32)
    assert torch.equal(culled.mask, full.mask)
    assert torch.allclose(culled.depth, full.depth)


def test_batch_equals_one_at_a_time():
    vertices, faces, K = sphere_scene(batch=3, size=24)
    batched = rasterize(vertices, faces, K, 24)
    for b in range(3):
        single = rasterize(vertices[b : b + 1], faces, K, 24)
        assert torch.equal(single.face_index[0], batched.face_index[b])
        assert torch.equal(single.depth[0], batched.depth[b])
        assert torch.equal(single.barycentrics[0], batched.barycentrics[b])


def test_depth_gradient_follows_the_surface():
    # Moving a fronto-parallel square 1 cm away moves every depth by 1 cm: d depth / d t_z = 1.
    K = make_intrinsics(100.0, 24.0, 24.0)
    square = torch.tensor([[[-0.16, -0.16, 1.0], [0.16, -0.16, 1.0], [0.16, 0.16, 1.0], [-0.16, 0.16, 1.0]]])
    translation = torch.zeros(3, requires_grad=True)
    fragments = rasterize(square + translation, torch.tensor([[0, 2, 1], [0, 3, 2]]), K, 48)
    fragments.depth.sum().backward()
    assert torch.allclose(translation.grad, torch.tensor([0.0, 0.0, 1024.0]), atol=1e-2)


def test_render_outputs():
    vertices, faces, K = sphere_scene(batch=2, size=32)
    labels = (vertices[0, :, 0] > 0).long()  # (V,) 1 on one half of the mesh
    out = render(vertices, faces, K, 32, background=(0.0, 0.0, 1.0), vertex_labels=labels)
    assert out.rgb.shape == (2, 3, 32, 32) and out.depth.shape == out.mask.shape == (2, 32, 32)
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1
    inside, outside = out.mask.bool(), ~out.mask.bool()
    assert torch.equal(out.rgb.permute(0, 2, 3, 1)[outside], torch.tensor([0.0, 0.0, 1.0]).expand(int(outside.sum()), 3))
    assert (out.rgb[:, 0][inside] > 0.25).all()  # skin is lit at least by the ambient term (0.4 * 0.8)
    assert set(out.part_labels[inside].unique().tolist()) == {0, 1}
    assert (out.part_labels[outside] == -1).all()
    # A pixel whose largest barycentric weight belongs to vertex v carries v's label.
    face = out.face_index[inside]
    corner = out.fragments.barycentrics[inside].argmax(-1)
    assert torch.equal(out.part_labels[inside], labels[faces[face, corner]])


def test_lambert_shading_of_a_plane_facing_the_light():
    # Light along the normal: colour = albedo * (ambient + (1 - ambient) * 1) = albedo.
    K = make_intrinsics(100.0, 24.0, 24.0)
    square = torch.tensor([[[-0.16, -0.16, 1.0], [0.16, -0.16, 1.0], [0.16, 0.16, 1.0], [-0.16, 0.16, 1.0]]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    out = render(square, faces, K, 48, vertex_colors=(0.5, 0.6, 0.7), light_direction=(0.0, 0.0, -1.0), ambient=0.3)
    assert torch.allclose(out.rgb[0, :, 24, 24], torch.tensor([0.5, 0.6, 0.7]), atol=1e-6)
    # Light at 60 degrees from the normal: ambient + (1 - ambient) cos 60 = 0.3 + 0.35 = 0.65.
    out = render(square, faces, K, 48, vertex_colors=(1.0, 1.0, 1.0), light_direction=(0.0, math.sin(math.pi / 3), -0.5), ambient=0.3)
    assert torch.allclose(out.rgb[0, :, 24, 24], torch.tensor(0.65), atol=1e-5)


def test_vertex_normals_of_a_sphere_point_outwards():
    vertices, faces = uv_sphere(rings=16, segments=24)
    normals = vertex_normals(vertices[None], faces)[0]
    assert torch.allclose(normals.norm(dim=-1), torch.tensor(1.0), atol=1e-5)
    assert ((normals * vertices).sum(-1) > 0.99).all()


def test_make_and_crop_intrinsics():
    K = make_intrinsics(100.0, 32.0, 24.0)
    assert torch.equal(K, torch.tensor([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]]))
    assert make_intrinsics(torch.tensor([100.0, 200.0]), 32.0, 24.0).shape == (2, 3, 3)
    # Crop the box with left/top edges (10, 4) and side 20, resize to 40: u' = 2 (u - 10), v' = 2 (v - 4).
    cropped = crop_intrinsics(K, (10.0, 4.0, 20.0), 40)
    points = torch.tensor([[0.05, -0.02, 0.5], [-0.01, 0.03, 0.4]])
    expected = 2 * (project_points(points, K) - torch.tensor([10.0, 4.0]))
    assert torch.allclose(project_points(points, cropped), expected, atol=1e-5)
    # Pixel (u, v) of the full image is pixel cropped K^-1 (u, v, 1) of the crop: the centre of the
    # crop's first pixel, (10.5, 4.5), lands on the centre of the first 2 x 2 block of the crop, (1, 1).
    moved = cropped @ torch.linalg.inv(K) @ torch.tensor([10.5, 4.5, 1.0])
    assert torch.allclose(moved, torch.tensor([1.0, 1.0, 1.0]), atol=1e-5)
    batched = crop_intrinsics(K, (torch.tensor([10.0, 0.0]), torch.tensor([4.0, 0.0]), torch.tensor([20.0, 40.0])), 40)
    assert batched.shape == (2, 3, 3) and torch.allclose(batched[0], cropped) and torch.allclose(batched[1], K)


def test_place_in_front_centres_the_mesh():
    vertices, _ = uv_sphere()
    placed = place_in_front(vertices[None] + 3.0, torch.tensor([0.45]))
    centre = (placed.amax(1) + placed.amin(1)) / 2
    assert torch.allclose(centre, torch.tensor([[0.0, 0.0, 0.45]]), atol=1e-6)


def test_pixels_in_image_is_the_rendered_area():
    # The pixel grid's one convention: a W x H image covers [0, W) x [0, H), pixel i's centre at i + 0.5.
    from handlib.render.camera import check_image_size, pixels_in_image

    points = torch.tensor([[0.0, 0.0], [63.99, 31.99], [64.0, 1.0], [1.0, 32.0], [-0.01, 5.0], [float("nan"), 5.0]])
    assert pixels_in_image(points, (32, 64)).tolist() == [True, True, False, False, False, False]
    # A point projected into a pixel of the rendered mask is "in the image" (rendering a tiny
    # triangle around it covers that pixel).
    K = torch.tensor([[100.0, 0, 8], [0, 100.0, 8], [0, 0, 1]])
    triangle = torch.tensor([[[-0.026, -0.026, 1.0], [-0.014, -0.026, 1.0], [-0.026, -0.014, 1.0]]])
    mask = rasterize(triangle, torch.tensor([[0, 1, 2]]), K, 16).mask[0]
    assert mask.nonzero().tolist() == [[5, 5]]                     # row 5, column 5: u, v in [5, 6)
    centre = project_points(triangle.mean(1, keepdim=True), K)[0, 0]
    assert pixels_in_image(centre, 16) and centre.floor().tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match="heatmap_size"):
        check_image_size((16, 0), "heatmap_size")
    with pytest.raises(ValueError, match="points"):
        pixels_in_image(torch.zeros(3), 16)


# ------------------------------------------------------------------------------------------------
# The soft silhouette
# ------------------------------------------------------------------------------------------------


def test_soft_silhouette_matches_brute_force():
    vertices, faces, K = sphere_scene(batch=2, size=24, dtype=torch.float64)
    for cull in (False, True):
        fast = soft_silhouette(vertices, faces, K, 24, sigma=0.5, cull_backfaces=cull)
        reference = soft_silhouette_reference(vertices, faces, K, 24, sigma=0.5, cull_backfaces=cull)
        assert fast.shape == (2, 24, 24) and 0 <= fast.min() and fast.max() <= 1
        # Only terms below the threshold (1e-4) are left out, a few per pixel at most.
        assert (fast - reference).abs().max() < 1e-3


def test_soft_silhouette_tends_to_the_hard_mask():
    vertices, faces, K = sphere_scene(batch=2, size=32)
    mask = rasterize(vertices, faces, K, 32).mask
    errors = []
    for sigma in (1.0, 0.1, 0.01, 0.001):
        soft = soft_silhouette(vertices, faces, K, 32, sigma=sigma, cull_backfaces=True)
        errors.append((soft - mask.float()).abs().mean().item())
    hard = soft > 0.5
    iou = (hard & mask).sum() / (hard | mask).sum()
    assert iou > 0.99  # at sigma = 0.01 px^2, 2 of 166 pixels still differ: centres within 0.1 px of the border
    assert errors[0] > errors[1] > errors[2] > errors[3]


def test_soft_silhouette_gradcheck():
    # One triangle at 6 x 6 pixels, double precision, a wide blur so that every pixel has a gradient.
    K = make_intrinsics(20.0, 3.0, 3.0, dtype=torch.float64)
    triangle = torch.tensor([[[-0.08, -0.1, 1.0], [0.1, -0.03, 1.1], [-0.02, 0.09, 0.9]]], dtype=torch.float64)
    triangle.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: soft_silhouette(v, TRIANGLE, K, 6, sigma=2.0), (triangle,))


def test_soft_silhouette_finite_differences():
    # d loss / d vertices against central differences, for a mask loss on a sphere.
    vertices, faces, K = sphere_scene(batch=1, size=16, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    weights = torch.rand(1, 16, 16, generator=generator, dtype=torch.float64)
    direction = torch.randn(vertices.shape, generator=generator, dtype=torch.float64) * 1e-3

    def loss(v):
        return (soft_silhouette(v, faces, K, 16, sigma=0.8) * weights).sum()

    vertices.requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss(vertices), vertices)
    step = 1e-4
    with torch.no_grad():
        numeric = (loss(vertices + step * direction) - loss(vertices - step * direction)) / (2 * step)
    analytic = (gradient * direction).sum()
    assert abs(analytic.item()) > 1e-3
    assert torch.allclose(analytic, numeric, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Input checks and devices
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vertices, faces, K, image_size, match",
    [
        (torch.zeros(3, 3), TRIANGLE, torch.eye(3), 8, "vertices"),  # no batch dimension
        (torch.zeros(1, 3, 2), TRIANGLE, torch.eye(3), 8, "vertices"),
        (torch.zeros(1, 3, 3), torch.tensor([[0, 1]]), torch.eye(3), 8, "faces"),
        (torch.zeros(1, 3, 3), torch.tensor([[0, 1, 3]]), torch.eye(3), 8, "faces"),  # index out of range
        (torch.zeros(1, 3, 3), TRIANGLE.float(), torch.eye(3), 8, "faces"),
        (torch.zeros(2, 3, 3), TRIANGLE, torch.eye(3).expand(3, 3, 3), 8, "K"),  # batch 3 for 2 meshes
        (torch.zeros(1, 3, 3), TRIANGLE, torch.eye(4), 8, "K"),
        (torch.zeros(1, 3, 3), TRIANGLE, torch.eye(3), 0, "image_size"),
        (torch.zeros(1, 3, 3), TRIANGLE, torch.eye(3), (8, 8, 3), "image_size"),
    ],
)
def test_bad_inputs_raise_clear_errors(vertices, faces, K, image_size, match):
    for function in (rasterize, render, soft_silhouette):
        with pytest.raises(ValueError, match=match):
            function(vertices, faces, K, image_size)


def test_bad_options_raise_clear_errors():
    triangle = torch.tensor([[[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [-0.1, 0.1, 1.0]]])
    K = make_intrinsics(40.0, 8.0, 8.0)
    with pytest.raises(ValueError, match="sigma"):
        soft_silhouette(triangle, TRIANGLE, K, 16, sigma=0.0)
    with pytest.raises(ValueError, match="vertex_colors"):
        render(triangle, TRIANGLE, K, 16, vertex_colors=torch.ones(4, 3))
    with pytest.raises(ValueError, match="vertex_labels"):
        render(triangle, TRIANGLE, K, 16, vertex_labels=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="background"):
        render(triangle, TRIANGLE, K, 16, background=torch.zeros(3, 8, 8))


@pytest.mark.parametrize("device", DEVICES)
def test_same_result_on_every_device(device):
    vertices, faces, K = sphere_scene(batch=2, size=32)
    on_cpu = render(vertices, faces, K, 32)
    on_device = render(vertices.to(device), faces.to(device), K.to(device), 32)
    assert torch.equal(on_device.mask.cpu(), on_cpu.mask)
    assert torch.allclose(on_device.depth.cpu(), on_cpu.depth, atol=1e-6)
    assert torch.allclose(on_device.rgb.cpu(), on_cpu.rgb, atol=1e-5)
    soft = soft_silhouette(vertices.to(device), faces.to(device), K.to(device), 32, cull_backfaces=True)
    assert torch.allclose(soft.cpu(), soft_silhouette(vertices, faces, K, 32, cull_backfaces=True), atol=1e-5)


# ---------------------------------------------------------------- soft depth (chapter 6)

def _posed_hands(count=2, seed=0):
    """MANO hands with small random poses, 0.45 to 0.55 m in front of the camera, tilted by the pose."""
    from handlib.mano.layer import ManoLayer
    from handlib.render import place_in_front

    generator = torch.Generator().manual_seed(seed)
    layer = ManoLayer(flat_hand_mean=True)
    pose = 0.3 * torch.randn(count, 48, generator=generator)
    vertices = layer(hand_pose=pose[:, 3:], global_orient=pose[:, :3]).vertices
    return place_in_front(vertices, 0.45 + 0.1 * torch.rand(count, generator=generator)), layer.faces


def test_soft_depth_matches_the_zbuffer_where_coverage_is_full():
    """On covered pixels whose 5 x 5 neighbourhood has no depth jump over 5 mm, the soft z-buffer
    (sigma 0.1 px^2, gamma 1 mm) is within 1 mm of the rasterizer's depth; its silhouette is 1 far off the mesh's border."""
    from handlib.render import make_intrinsics, soft_depth

    vertices, faces = _posed_hands()
    K = make_intrinsics(250.0, 48.0, 48.0)
    hard = rasterize(vertices, faces, K, 96)
    depth, silhouette = soft_depth(vertices, faces, K, 96, sigma=0.1, gamma=1e-3)
    covered = hard.mask[:, None].float()
    interior = -torch.nn.functional.max_pool2d(-covered, 5, 1, 2)[:, 0] > 0
    far = torch.nn.functional.max_pool2d(hard.depth[:, None], 5, 1, 2)[:, 0]
    near = -torch.nn.functional.max_pool2d(-torch.where(hard.mask, hard.depth, torch.inf)[:, None], 5, 1, 2)[:, 0]
    smooth = interior & (far - near < 0.005)
    assert smooth.sum() > 200
    error = (depth - hard.depth).abs()[smooth]
    assert error.max() < 1e-3 and error.mean() < 1e-4
    assert silhouette[~torch.nn.functional.max_pool2d(covered, 5, 1, 2)[:, 0].bool()].max() < 1e-3   # off the hand
    assert depth[~torch.nn.functional.max_pool2d(covered, 9, 1, 4)[:, 0].bool()].abs().max() == 0    # no candidate


def test_soft_depth_gradients_pass_gradcheck():
    """float64, a tilted quad and a triangle in front of part of it, on an 8 x 8 image."""
    from handlib.render import soft_depth

    vertices = torch.tensor([[[-0.04, -0.04, 0.50], [0.04, -0.04, 0.52], [0.04, 0.04, 0.54], [-0.04, 0.04, 0.52],
                              [-0.01, -0.03, 0.47], [0.03, 0.0, 0.48], [-0.02, 0.02, 0.475]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    K = torch.tensor([[60.0, 0, 4], [0, 60.0, 4], [0, 0, 1]], dtype=torch.float64)
    vertices = (vertices + 1e-3 * torch.randn(vertices.shape, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64)).requires_grad_(True)

    def both(v):
        depth, silhouette = soft_depth(v, faces, K, 8, sigma=0.5, gamma=0.01)
        return depth, silhouette

    assert torch.autograd.gradcheck(both, (vertices,), eps=1e-6, atol=1e-5)
    depth, _ = both(vertices)
    depth.sum().backward()
    assert vertices.grad[0, 4:].abs().sum() > 0        # the front triangle moves the depth it covers


def test_soft_depth_checks_its_softness():
    from handlib.render import soft_depth

    vertices, faces = _posed_hands(1)
    with pytest.raises(ValueError, match="gamma: expected a positive depth softness"):
        soft_depth(vertices, faces, torch.eye(3), 16, gamma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        soft_depth(vertices, faces, torch.eye(3), 16, sigma=-1.0)
