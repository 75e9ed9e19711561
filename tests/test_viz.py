"""Plots and the hand explorer, without a browser: the traces carry the right arrays, and moving a
slider moves the mesh in the FigureWidget (what the browser would be sent)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from handlib.mano import ManoLayer  # noqa: E402
from handlib.skeleton import BONES, FINGERS, MANO_PARENTS  # noqa: E402
from handlib.viz.explorer import FINGER_JOINTS, HandExplorer  # noqa: E402
from handlib.viz.plot2d import (FINGER_COLORS, draw_keypoints_2d, draw_mesh_2d, keypoint_colors,  # noqa: E402
                                show_image_with_keypoints)
from handlib.viz.plot3d import (FINGER_PATHS, SKIN_COLOR, hand_figure, hand_mesh_trace, joint_label_trace,  # noqa: E402
                                mesh_vertices, set_hand_data, skeleton_traces, static_picture)


@pytest.fixture
def hand(random_mano_file):
    layer = ManoLayer(random_mano_file)
    out = layer()
    return layer, out.vertices[0], out.joints[0]


# -------------------------------------------------------------------------------------------------
# plot3d


def test_mesh_trace_sends_float32_and_int32(hand):
    layer, vertices, _ = hand
    trace = hand_mesh_trace(vertices, layer.faces)
    assert trace.x.dtype == np.float32 and trace.i.dtype == np.uint16  # compact binary arrays for the browser
    np.testing.assert_allclose(trace.y, vertices[:, 1].numpy())
    assert len(trace.i) == layer.faces.shape[0]
    weights = hand_mesh_trace(vertices, layer.faces, colors=layer.weights[:, 3])
    assert weights.intensity.dtype == np.float32 and weights.showscale
    rgb = hand_mesh_trace(vertices, layer.faces, colors=np.tile([1.0, 0.0, 0.5], (len(vertices), 1)))
    assert rgb.vertexcolor[0] == "rgb(255,0,128)"


def test_mesh_trace_rejects_bad_input(hand):
    layer, vertices, _ = hand
    with pytest.raises(ValueError, match="vertices.*one hand"):
        hand_mesh_trace(vertices[None], layer.faces)
    with pytest.raises(ValueError, match="faces"):
        hand_mesh_trace(vertices, layer.faces.float())
    with pytest.raises(ValueError, match="faces: vertex indices"):
        hand_mesh_trace(vertices, layer.faces + len(vertices))
    with pytest.raises(ValueError, match="colors"):
        hand_mesh_trace(vertices, layer.faces, colors=np.zeros(len(vertices) + 1))


def test_skeleton_draws_every_bone_once_in_its_finger_colour():
    joints = torch.arange(63, dtype=torch.float32).reshape(21, 3)
    traces = skeleton_traces(joints)
    assert [t.name for t in traces] == list(FINGERS)
    assert FINGER_PATHS["thumb"] == (0, 1, 2, 3, 4) and FINGER_PATHS["pinky"] == (0, 17, 18, 19, 20)
    drawn = []
    for trace, finger in zip(traces, FINGERS):
        assert trace.line.color == FINGER_COLORS[finger]
        # Recover the keypoint index from the x coordinate (x = 3 * index).
        path = (np.asarray(trace.x) / 3).round().astype(int).tolist()
        drawn += list(zip(path[:-1], path[1:]))
    assert sorted(drawn) == sorted(BONES)
    with pytest.raises(ValueError, match=r"joints: expected shape \(21, 3\)"):
        skeleton_traces(joints[:20])


def test_label_trace_names_the_keypoints():
    trace = joint_label_trace(torch.zeros(21, 3))
    assert list(trace.text) == [str(i) for i in range(21)] and trace.hovertext[0] == "wrist"
    with pytest.raises(ValueError, match="labels"):
        joint_label_trace(torch.zeros(21, 3), labels=["a"])


def test_hand_figure_layout_and_update(hand):
    layer, vertices, joints = hand
    figure = hand_figure(vertices, layer.faces, joints)
    assert isinstance(figure, go.Figure) and not isinstance(figure, go.FigureWidget)
    assert [t.name for t in figure.data] == ["mesh", *FINGERS, "labels"]
    assert figure.layout.scene.aspectmode == "data" and figure.layout.scene.uirevision == "hand"
    assert isinstance(hand_figure(joints=joints, widget=True), go.FigureWidget)
    set_hand_data(figure, vertices + 1.0, joints + 1.0)
    np.testing.assert_allclose(mesh_vertices(figure), vertices.numpy() + 1.0, atol=1e-6)
    assert figure.data[1].x[0] == pytest.approx(float(joints[0, 0]) + 1.0)
    assert len(figure.data[0].i) == layer.faces.shape[0]  # topology untouched
    with pytest.raises(ValueError, match="faces"):
        hand_figure(vertices)
    with pytest.raises(ValueError, match="vertices"):
        set_hand_data(figure, vertices[:-1])


# -------------------------------------------------------------------------------------------------
# plot2d


def test_static_picture_draws_every_triangle_from_the_figures_camera(hand):
    from matplotlib.collections import PolyCollection

    layer, vertices, joints = hand
    for view in ("model", "camera"):
        figure = hand_figure(vertices, layer.faces, joints, colors=layer.weights[:, 3], view=view, title="t")
        ax = static_picture(figure)
        polygons = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(polygons) == 1 and len(polygons[0].get_paths()) == layer.faces.shape[0]
        assert len(ax.lines) == len(FINGERS) and ax.get_title() == "t"
        plt.close("all")
    # a mesh's colour scale is the figure's: one skin colour (the explorer's start) stays skin, not viridis
    skin = [[0, SKIN_COLOR], [1, SKIN_COLOR]]
    figure = hand_figure(vertices, layer.faces, colors=np.zeros(len(vertices)), colorscale=skin)
    colours = static_picture(figure, light=0.0).collections[0].get_facecolors()[:, :3]
    np.testing.assert_allclose(colours, np.broadcast_to(matplotlib.colors.to_rgb(SKIN_COLOR), colours.shape), atol=1e-6)
    plt.close("all")
    # the camera view looks along +z with y down: a point's screen x is its x, its screen y is -y
    figure = hand_figure(joints=joints, view="camera", labels=False)
    ax = static_picture(figure)
    thumb = np.asarray(ax.lines[0].get_xydata())
    path = joints[list(FINGER_PATHS["thumb"])].numpy()
    np.testing.assert_allclose(thumb, np.stack([path[:, 0], -path[:, 1]], -1), atol=1e-6)
    plt.close("all")


def test_draw_keypoints_2d_draws_bones_and_respects_visibility():
    keypoints = np.random.default_rng(0).random((21, 2)) * 100
    fig, ax = plt.subplots()
    draw_keypoints_2d(ax, keypoints)
    assert len(ax.lines) == 20 + 21  # 20 bones + 21 markers
    ax.clear()
    visibility = np.ones(21)
    visibility[[4, 8]] = 0  # two fingertips hidden: their markers and their last bones go
    draw_keypoints_2d(ax, torch.as_tensor(keypoints), visibility)
    assert len(ax.lines) == 18 + 19
    assert keypoint_colors()[0] != keypoint_colors()[1] == keypoint_colors()[4]
    with pytest.raises(ValueError, match="keypoints"):
        draw_keypoints_2d(ax, keypoints[None])
    with pytest.raises(ValueError, match="visibility"):
        draw_keypoints_2d(ax, keypoints, np.ones(20))
    plt.close(fig)


def test_draw_mesh_2d_draws_every_triangle_and_checks_the_faces(hand):
    layer, vertices, _ = hand
    faces = layer.faces
    fig, ax = plt.subplots()
    triangles = draw_mesh_2d(ax, vertices[:, :2] * 1000, faces)
    assert len(triangles.get_paths()) == len(faces)
    assert len(triangles.get_facecolors()) == 0 and len(triangles.get_edgecolors()) == 1       # edges only
    silhouette = draw_mesh_2d(ax, vertices[:, :2] * 1000, faces, color="tab:blue", alpha=1.0, filled=True)
    np.testing.assert_allclose(silhouette.get_facecolors()[0], matplotlib.colors.to_rgba("tab:blue"))
    assert len(silhouette.get_edgecolors()) == 0                                                # no edges
    with pytest.raises(ValueError, match="vertex indices"):
        draw_mesh_2d(ax, vertices[:10, :2], faces)
    with pytest.raises(ValueError, match="faces"):
        draw_mesh_2d(ax, vertices[:, :2], faces[:, :2])
    plt.close(fig)


def test_show_image_with_keypoints_accepts_handlib_images():
    image = torch.rand(3, 32, 48)
    ax = show_image_with_keypoints(image, np.full((21, 2), 10.0), title="t", prediction=np.full((21, 2), 12.0))
    assert ax.images[0].get_array().shape == (32, 48, 3) and ax.get_title() == "t"
    # handlib's pixel convention: pixel i covers [i, i + 1), so the 48 x 32 image spans (0, 48) x (32, 0),
    # also after keypoints outside it are drawn.
    assert ax.get_xlim() == (0, 48) and ax.get_ylim() == (32, 0)
    assert tuple(ax.images[0].get_extent()) == (0, 48, 32, 0)
    ax = show_image_with_keypoints(image, np.full((21, 2), 100.0))
    assert ax.get_xlim() == (0, 48)
    with pytest.raises(ValueError, match="image"):
        show_image_with_keypoints(torch.rand(5, 32, 32))
    plt.close("all")


# -------------------------------------------------------------------------------------------------
# The explorer


@pytest.fixture
def explorer(random_mano_file):
    return HandExplorer(random_mano_file, num_pca_comps=4)


def test_explorer_builds_one_figure_widget(explorer):
    assert isinstance(explorer.figure, go.FigureWidget)
    assert explorer.figure in explorer.widget.children
    assert len(explorer.beta_sliders) == 10 and len(explorer.pca_sliders) == 4
    assert len(explorer.rotation_sliders) == 3 and len(explorer.joint_sliders) == 3


def test_slider_moves_the_mesh_and_reset_restores_it(explorer):
    rest = explorer.vertices()
    faces = np.asarray(explorer.figure.data[0].i).copy()
    explorer.beta_sliders[0].value = 1.5  # what the browser does when the user drags
    moved = explorer.vertices()
    assert np.abs(moved - rest).max() > 1e-4
    expected = explorer.layer(betas=torch.tensor([[1.5]])).vertices[0].detach().numpy()
    np.testing.assert_allclose(moved, expected, atol=1e-6)
    np.testing.assert_array_equal(explorer.figure.data[0].i, faces)
    assert explorer.last_update_ms > 0
    explorer.pca_sliders[1].value = -1.0
    explorer.rotation_sliders[2].value = 0.5
    assert np.abs(explorer.vertices() - moved).max() > 1e-4
    explorer.reset()
    np.testing.assert_allclose(explorer.vertices(), rest, atol=1e-7)



def test_explorer_opens_on_a_given_hand_and_reset_returns_to_it(random_mano_file):
    """A predicted hand (its shape, PCA pose and rotation) as the starting sliders: the figure shows
    exactly that hand, reset goes back to it, not to the template, and a slider widens to hold a
    starting value beyond its range."""
    layer = ManoLayer(random_mano_file, num_pca_comps=4, flat_hand_mean=False)    # as a regressor's MANO layer
    betas, pca, orient = torch.tensor([1.0, -0.5]), torch.tensor([0.8, 0.0, -1.2]), torch.tensor([0.3, -0.2, 2.5])
    explorer = HandExplorer(layer, num_pca_comps=4, betas=betas, pca=pca, global_orient=orient, view="camera")
    with torch.no_grad():                                                       # what the regressor's layer makes
        expected = layer(hand_pose=torch.cat([pca, torch.zeros(1)])[None], betas=betas[None],
                         global_orient=orient[None]).vertices[0].numpy()
    np.testing.assert_allclose(explorer.vertices(), expected, atol=1e-6)
    assert [slider.value for slider in explorer.beta_sliders[:3]] == pytest.approx([1.0, -0.5, 0.0])
    assert explorer.figure.layout.scene.camera.up.y == -1                       # the camera's view: y down
    explorer.set(betas=[3.0], pca=[0.0], global_orient=[0.0, 0.0, 0.0], joint="index1", joint_pose=[0.5, 0.0, 0.0])
    explorer.reset()
    np.testing.assert_allclose(explorer.vertices(), expected, atol=1e-6)
    wide = HandExplorer(layer, num_pca_comps=4, betas=[4.03], global_orient=[0.0, 0.0, -3.45])  # beyond the ranges
    assert wide.beta_sliders[0].value == pytest.approx(4.03) and wide.beta_sliders[0].max == pytest.approx(4.1)
    assert wide.rotation_sliders[2].value == pytest.approx(-3.45)
    assert wide.rotation_sliders[2].min == pytest.approx(-3.5)
    assert wide.beta_sliders[1].max == 3.0                                         # the others keep their range
    with pytest.raises(ValueError, match="betas: expected finite"):
        HandExplorer(layer, num_pca_comps=4, betas=[float("nan")])
    with pytest.raises(ValueError, match="global_orient: expected 3"):
        HandExplorer(layer, num_pca_comps=4, global_orient=[0.1])

def test_turning_one_joint_moves_only_the_skin_it_carries(explorer):
    # LBS: a vertex moves with joint k only through the weights of k and of k's descendants.
    joint = "index2"
    k = 1 + FINGER_JOINTS.index(joint)
    subtree = {k} | {j for j in range(16) if MANO_PARENTS[j] == k}
    subtree |= {j for j in range(16) if MANO_PARENTS[j] in subtree}  # the joints below k (two levels at most)
    carried = explorer.layer.weights[:, sorted(subtree)].sum(1).numpy()
    rest = explorer.vertices()
    explorer.set(joint=joint, joint_pose=[0.0, 0.0, 1.0])
    moved = np.abs(explorer.vertices() - rest).max(1)
    assert moved[carried > 0.05].max() > 1e-4
    # Pose correctives move the rest a little (they depend on every joint's rotation): compare sizes.
    assert moved[carried == 0].max(initial=0.0) < 0.5 * moved[carried > 0.05].max()


def test_per_joint_mode_remembers_each_joint(explorer):
    explorer.set(joint="thumb1", joint_pose=[0.3, 0.0, 0.0])
    explorer.set(joint="pinky3", joint_pose=[0.0, -0.2, 0.0])
    explorer.joint_dropdown.value = "thumb1"
    assert [s.value for s in explorer.joint_sliders] == [0.3, 0.0, 0.0]
    hand_pose = explorer.parameters()["hand_pose"].reshape(15, 3)
    assert hand_pose[FINGER_JOINTS.index("thumb1"), 0] == pytest.approx(0.3)
    assert hand_pose[FINGER_JOINTS.index("pinky3"), 1] == pytest.approx(-0.2)


def test_colour_by_skinning_weight(explorer):
    explorer.color_dropdown.value = 4  # middle1
    mesh = explorer.figure.data[0]
    np.testing.assert_allclose(mesh.intensity, explorer.layer.weights[:, 4].numpy())
    assert mesh.showscale and mesh.colorscale[0][1] != SKIN_COLOR
    explorer.set(color_by=None)
    assert not mesh.showscale and all(color == SKIN_COLOR for _, color in mesh.colorscale)
    explorer.set(color_by="thumb3")
    explorer.reset()  # reset also returns to skin colour
    assert not mesh.showscale and explorer.color_dropdown.label == "skin"


def test_explorer_rejects_bad_input(explorer, random_mano_file):
    with pytest.raises(ValueError, match="betas: expected at most 10"):
        explorer.set(betas=np.zeros(11))
    with pytest.raises(ValueError, match="outside the slider range"):
        explorer.set(pca=[5.0])
    with pytest.raises(ValueError, match="global_orient: expected 3"):
        explorer.set(global_orient=[0.1])
    with pytest.raises(ValueError, match="joint: expected one of"):
        explorer.set(joint="elbow")
    with pytest.raises(ValueError, match="color_by"):
        explorer.set(color_by="elbow")
    with pytest.raises(ValueError, match="color_by"):
        explorer.set(color_by=16)
    # Bad input loses nothing: a call with one bad argument moves no slider.
    before = [slider.value for slider in explorer.beta_sliders + explorer.joint_sliders]
    for bad in (dict(betas=[2.0], color_by="nope"), dict(betas=[2.0], joint="elbow"),
                dict(betas=[2.0], joint="index1", joint_pose=[9.0, 0.0, 0.0])):
        with pytest.raises(ValueError):
            explorer.set(**bad)
        assert [slider.value for slider in explorer.beta_sliders + explorer.joint_sliders] == before
    with pytest.raises(ValueError, match="num_pca_comps"):
        HandExplorer(random_mano_file, num_pca_comps=0)
    with pytest.raises(ValueError, match="layer"):
        HandExplorer(42)
    with pytest.raises(ValueError, match="kind"):
        explorer.time_updates(2, kind="zoom")


def test_update_timing_is_measured(explorer):
    times = explorer.time_updates(3, kind="rotation")
    assert times.shape == (3,) and (times > 0).all()
