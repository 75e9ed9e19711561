"""Plotly pictures of a 3D hand: the mesh, the 21-keypoint skeleton, keypoint labels.

The figure has a fixed layout of traces, so an interactive view can move the hand by replacing
only coordinate arrays (``set_hand_data``) and never rebuilds the scene:

    trace 0        "mesh"      Mesh3d of the hand
    traces 1-5     "thumb" ... "pinky": one polyline per finger, wrist to tip
    trace 6        "labels"    the keypoint numbers as text

Arrays go to plotly as float32 (and uint16 or int32 faces): plotly sends such numpy arrays to the
browser, and stores them in notebooks, as compact binary buffers.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from handlib.skeleton import BONES, FINGER_KEYPOINTS, FINGERS, KEYPOINT_NAMES, NUM_KEYPOINTS, PARENTS
from handlib.viz.plot2d import FINGER_COLORS, WRIST_COLOR, as_numpy

SKIN_COLOR = "#e8b894"
UIREVISION = "hand"  # a constant: the camera stays where the user put it when the data change
# Where the viewer stands. "model": MANO's template frame (fingers along -x, back of the hand +y),
# seen from the back of the hand with the fingers up. "camera": the OpenCV camera frame (x right,
# y down, z forward), seen from the camera.
# "side": MANO's template frame seen from the thumb's side, where bent fingers show their curl.
VIEWS = {
    "model": dict(up=dict(x=-1, y=0, z=0), eye=dict(x=0.0, y=2.0, z=0.7), center=dict(x=0, y=0, z=0)),
    "side": dict(up=dict(x=-1, y=0, z=0), eye=dict(x=0.0, y=0.8, z=2.0), center=dict(x=0, y=0, z=0)),
    "camera": dict(up=dict(x=0, y=-1, z=0), eye=dict(x=0.0, y=0.0, z=-1.8), center=dict(x=0, y=0, z=0)),
}
# Light positions (plotly's Mesh3d lightposition) that light the side of the hand each view shows.
LIGHTS = {"model": dict(x=100, y=200, z=300), "side": dict(x=100, y=200, z=300), "camera": dict(x=0, y=1e5, z=0)}
# Each finger as a polyline through the skeleton: its first keypoint's parent (the wrist), then base to tip.
FINGER_PATHS = {finger: (PARENTS[keys[0]],) + tuple(keys) for finger, keys in FINGER_KEYPOINTS.items()}
assert sorted(b for path in FINGER_PATHS.values() for b in zip(path[:-1], path[1:])) == sorted(BONES)


def _float32(x, name: str, shape: tuple) -> np.ndarray:
    """float32 for plotly: numeric arrays that are not 64-bit travel to the browser as binary buffers."""
    return as_numpy(x, name, shape, np.float32)


def _faces(faces, num_vertices: int) -> np.ndarray:
    if isinstance(faces, torch.Tensor):
        faces = faces.detach().cpu().numpy()
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces: expected an integer array of shape (F, 3), got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(f"faces: vertex indices must lie in 0..{num_vertices - 1}, got {faces.min()}..{faces.max()}")
    # The smallest integer type that holds the indices: plotly sends the array as binary, so a
    # 778-vertex hand's faces travel (and are stored in notebooks) as 2 bytes per index, not 4 or 8.
    return np.ascontiguousarray(faces, dtype=np.uint16 if num_vertices <= 2**16 else np.int32)


def hand_mesh_trace(vertices, faces, colors=None, *, name: str = "mesh", opacity: float = 1.0,
                    colorscale: str = "Viridis", color_range: tuple[float, float] | None = None,
                    colorbar_title: str = "") -> go.Mesh3d:
    """The hand mesh as a plotly Mesh3d.

    Args:
        vertices: (V, 3) vertex positions, metres (numpy or torch).
        faces: (F, 3) integer triangles.
        colors: None for skin colour; (V,) scalars per vertex (for example the skinning weights of
            one joint), shown through ``colorscale``; or (V, 3) RGB in [0, 1].
        name: trace name.
        opacity: 0..1; below 1 the skeleton inside shows through.
        colorscale: plotly colour scale for scalar ``colors``.
        color_range: (min, max) of the colour scale for scalar colours; None: the data's range.
        colorbar_title: title of the colour bar for scalar colours.

    Returns:
        go.Mesh3d with float32 x, y, z and uint16 (int32 beyond 65536 vertices) i, j, k.
    """
    vertices = _float32(vertices, "vertices", (None, 3))
    faces = _faces(faces, len(vertices))
    trace = go.Mesh3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=faces[:, 0], j=faces[:, 1],
                      k=faces[:, 2], name=name, opacity=opacity, flatshading=False, hoverinfo="skip",
                      lighting=dict(ambient=0.55, diffuse=0.75, specular=0.15, roughness=0.6, fresnel=0.1))
    if colors is None:
        trace.color = SKIN_COLOR
        return trace
    colors = np.asarray(colors.detach().cpu() if isinstance(colors, torch.Tensor) else colors, dtype=np.float32)
    if colors.shape == (len(vertices),):
        low, high = color_range if color_range is not None else (float(colors.min()), float(colors.max()))
        trace.update(intensity=colors, intensitymode="vertex", colorscale=colorscale, cmin=low, cmax=high,
                     showscale=True, colorbar=dict(title=dict(text=colorbar_title), len=0.6, thickness=12))
    elif colors.shape == (len(vertices), 3):
        rgb = np.clip(np.round(colors * 255), 0, 255).astype(int)
        trace.vertexcolor = [f"rgb({r},{g},{b})" for r, g, b in rgb]
    else:
        raise ValueError(f"colors: expected None, ({len(vertices)},) scalars or ({len(vertices)}, 3) RGB, "
                         f"got shape {colors.shape}")
    return trace


def skeleton_traces(joints, *, width: float = 6.0, marker_size: float = 3.0, colors: dict | None = None,
                    name_prefix: str = "") -> list[go.Scatter3d]:
    """The 20 bones of ``skeleton.BONES`` as five polylines (one per finger, wrist to tip).

    Args:
        joints: (21, 3) keypoints, metres, course order.
        width: line width, pixels.
        marker_size: keypoint marker size, pixels.
        colors: finger -> colour; default ``plot2d.FINGER_COLORS``.
        name_prefix: prefixed to the finger names (to tell a prediction from the ground truth).

    Returns:
        Five go.Scatter3d, thumb to pinky, named after their finger.
    """
    joints = _float32(joints, "joints", (NUM_KEYPOINTS, 3))
    colors = colors or FINGER_COLORS
    traces = []
    for finger in FINGERS:
        path = list(FINGER_PATHS[finger])
        points = joints[path]
        traces.append(go.Scatter3d(
            x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="lines+markers", name=name_prefix + finger,
            line=dict(color=colors[finger], width=width), marker=dict(size=marker_size, color=colors[finger]),
            text=[KEYPOINT_NAMES[k] for k in path], hovertemplate="%{text}<extra></extra>"))
    return traces


def joint_label_trace(joints, labels=None, *, name: str = "labels", size: int = 11) -> go.Scatter3d:
    """Text labels at the 21 keypoints.

    Args:
        joints: (21, 3) keypoints, metres, course order.
        labels: 21 strings; default the keypoint indices "0".."20" (hover shows the names).
        name: trace name.
        size: font size, pixels.

    Returns:
        go.Scatter3d in text mode.
    """
    joints = _float32(joints, "joints", (NUM_KEYPOINTS, 3))
    labels = [str(i) for i in range(NUM_KEYPOINTS)] if labels is None else [str(label) for label in labels]
    if len(labels) != NUM_KEYPOINTS:
        raise ValueError(f"labels: expected 21 strings, got {len(labels)}")
    return go.Scatter3d(x=joints[:, 0], y=joints[:, 1], z=joints[:, 2], mode="text", text=labels, name=name,
                        textfont=dict(size=size, color="black"), hovertext=list(KEYPOINT_NAMES),
                        hoverinfo="text", showlegend=False)


def _layout(figure: go.Figure, title: str | None, height: int, view: str, zoom: float = 1.0):
    """Scene, camera and lighting of a hand figure: true proportions, no axes, the lit side towards the viewer."""
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {tuple(VIEWS)}, got {view!r}")
    camera = {key: dict(value) for key, value in VIEWS[view].items()}
    camera["eye"] = {axis: value / zoom for axis, value in camera["eye"].items()}
    figure.update_traces(lightposition=LIGHTS[view], selector=dict(type="mesh3d"))
    axis = dict(showbackground=False, showticklabels=False, title=dict(text=""), showspikes=False)
    figure.update_layout(
        title=dict(text=title) if title else None, height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        uirevision=UIREVISION, showlegend=False,
        scene=dict(aspectmode="data", uirevision=UIREVISION, xaxis=axis, yaxis=axis, zaxis=axis, camera=camera))
    return figure


def hand_figure(vertices=None, faces=None, joints=None, *, colors=None, labels: bool = True,
                title: str | None = None, opacity: float | None = None, height: int = 480,
                view: str = "model", widget: bool = False, **mesh_options) -> go.Figure:
    """A 3D figure of one hand: the mesh, the skeleton and the keypoint labels.

    Args:
        vertices: (V, 3) metres, or None for the skeleton only.
        faces: (F, 3) triangles (needed with ``vertices``).
        joints: (21, 3) metres, course order, or None for the mesh only.
        colors: vertex colours, see ``hand_mesh_trace``.
        labels: write the keypoint numbers next to the joints.
        title: figure title.
        opacity: mesh opacity; default 0.45 with a skeleton (so it shows through), else 1.
        height: figure height, pixels.
        view: "model" (MANO's template frame, back of the hand), "side" (template frame, from the
            thumb's side) or "camera" (OpenCV camera frame, as the camera sees it); the user can
            turn the view with the mouse.
        widget: return a ``go.FigureWidget`` (interactive, updatable from Python) instead of a ``go.Figure``.
        **mesh_options: passed to ``hand_mesh_trace`` (colorscale, color_range, colorbar_title).

    Returns:
        go.Figure (or go.FigureWidget) with the traces in the order of the module docstring; scene
        aspect ratio "data" (true proportions), ``uirevision`` constant.
    """
    if vertices is None and joints is None:
        raise ValueError("vertices, joints: give at least one of them")
    if vertices is not None and faces is None:
        raise ValueError("faces: needed to draw vertices as a mesh (e.g. layer.faces)")
    traces = []
    if vertices is not None:
        opacity = opacity if opacity is not None else (0.45 if joints is not None else 1.0)
        traces.append(hand_mesh_trace(vertices, faces, colors, opacity=opacity, **mesh_options))
    if joints is not None:
        traces += skeleton_traces(joints)
        if labels:
            traces.append(joint_label_trace(joints))
    return _layout((go.FigureWidget if widget else go.Figure)(data=traces), title, height, view)


def _screen_axes(view: str) -> tuple[np.ndarray, np.ndarray]:
    """The (3,) unit vectors of a view's screen: up, and across (up x out of the screen), along which
    ``hand_row_figure`` and ``hand_comparison_figure`` lay their hands side by side."""
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {tuple(VIEWS)}, got {view!r}")
    camera = VIEWS[view]
    up = np.array([camera["up"][a] for a in "xyz"], dtype=np.float32)
    eye = np.array([camera["eye"][a] for a in "xyz"], dtype=np.float32)
    across = np.cross(up, eye)
    return up, across / np.linalg.norm(across)


def hand_row_figure(vertices, faces, *, joints=None, labels=None, colors=None, spacing: float | None = None,
                    title: str | None = None, height: int = 360, view: str = "model", **mesh_options) -> go.Figure:
    """Several hands side by side in one 3D scene, to compare them (shapes, poses, fits).

    Args:
        vertices: (N, V, 3) metres, N hands with the same faces.
        faces: (F, 3) triangles.
        joints: (N, 21, 3) keypoints to draw as skeletons too, or None.
        labels: N strings written above the hands, or None.
        colors: None, or a list of N vertex colourings (see ``hand_mesh_trace``).
        spacing: distance between neighbouring hands, metres; default 1.2 times the widest hand.
        title: figure title.
        height: figure height, pixels.
        view: "model", "side" or "camera" (see ``hand_figure``); the hands are laid out along
            the screen's horizontal axis of that view.
        **mesh_options: passed to ``hand_mesh_trace``.

    Returns:
        go.Figure with one Mesh3d per hand (named "mesh 0", "mesh 1", ...), then the skeletons
        and the labels.
    """
    vertices = _float32(vertices, "vertices", (None, None, 3))
    if joints is not None:
        joints = _float32(joints, "joints", (len(vertices), NUM_KEYPOINTS, 3))
    if labels is not None and len(labels) != len(vertices):
        raise ValueError(f"labels: expected {len(vertices)} strings, got {len(labels)}")
    if colors is not None and len(colors) != len(vertices):
        raise ValueError(f"colors: expected {len(vertices)} colourings, got {len(colors)}")
    up, across = _screen_axes(view)
    extent = (vertices @ across).max(1) - (vertices @ across).min(1)
    spacing = float(1.2 * extent.max()) if spacing is None else spacing
    offsets = (np.arange(len(vertices)) - (len(vertices) - 1) / 2)[:, None] * spacing * across  # (N, 3)
    centred = vertices - vertices.mean(1, keepdims=True) + offsets[:, None]
    traces = [hand_mesh_trace(v, faces, None if colors is None else colors[n], name=f"mesh {n}", **mesh_options)
              for n, v in enumerate(centred)]
    for n in range(1, len(traces)):
        traces[n].showscale = False  # one colour bar is enough
    if joints is not None:
        shift = offsets[:, None] - vertices.mean(1, keepdims=True)
        for n, j in enumerate(joints + shift):
            traces += skeleton_traces(j, name_prefix=f"{n} ")
    if labels is not None:
        top = centred @ up  # (N, V)
        anchor = centred.mean(1) + (top.max(1) - (centred.mean(1) @ up))[:, None] * up * 1.15
        traces.append(go.Scatter3d(x=anchor[:, 0], y=anchor[:, 1], z=anchor[:, 2], mode="text",
                                   text=[str(label) for label in labels], name="titles", hoverinfo="skip",
                                   textfont=dict(size=13, color="black")))
    # The scene is N hands wide: move the eye closer so that the hands fill the figure's width.
    return _layout(go.Figure(data=traces), title, height, view, zoom=1.0 if len(vertices) == 1 else 1.5)


def hand_comparison_figure(joints, labels, vertices=None, faces=None, *, spacing: float = 0.22,
                           title: str | None = None, height: int = 380, view: str = "camera",
                           widget: bool = False) -> go.Figure:
    """Several answers for one hand side by side in one 3D scene: each a skeleton, with its mesh where
    it has one (methods differ: some give keypoints only).

    Args:
        joints: list of N (21, 3) keypoints, metres, root-relative (wrist at the origin), camera axes.
        labels: N strings written above the hands (e.g. the methods' names).
        vertices: None, or a list of N (V, 3) meshes (metres, same frame) or None where a hand has none.
        faces: (F, 3) triangles of the meshes (needed when a mesh is given).
        spacing: distance between neighbouring wrists along the screen's horizontal axis, metres.
        title: figure title.
        height: figure height, pixels.
        view: "camera" (the photo's camera: x right, y down), "model" or "side" (see ``hand_figure``).
        widget: return a ``go.FigureWidget`` (the user turns the view with the mouse; ``set_hand_data``
            does not apply: there are several hands).

    Returns:
        go.Figure (or FigureWidget): a Mesh3d "mesh <label>" per mesh, five finger polylines
        "<label> thumb" ... per hand, and a text trace "titles".
    """
    joints = [_float32(j, "joints", (NUM_KEYPOINTS, 3)) for j in joints]
    labels = [str(label) for label in labels]
    if len(labels) != len(joints):
        raise ValueError(f"labels: expected {len(joints)} strings, got {len(labels)}")
    vertices = [None] * len(joints) if vertices is None else list(vertices)
    if len(vertices) != len(joints):
        raise ValueError(f"vertices: expected a list of {len(joints)} meshes (or None), got {len(vertices)}")
    if any(v is not None for v in vertices) and faces is None:
        raise ValueError("faces: needed to draw the meshes (e.g. ManoLayer().faces)")
    up, across = _screen_axes(view)
    offsets = (np.arange(len(joints)) - (len(joints) - 1) / 2)[:, None] * spacing * across      # (N, 3)
    traces, anchors = [], []
    for n, (points, mesh, label) in enumerate(zip(joints, vertices, labels)):
        shift = offsets[n] - points[0]                                                          # wrist to its slot
        if mesh is not None:
            mesh = _float32(mesh, "vertices", (None, 3)) + shift
            traces.append(hand_mesh_trace(mesh, faces, name=f"mesh {label}", opacity=0.45))
        traces += skeleton_traces(points + shift, name_prefix=f"{label} ")
        top = max(float(((points + shift) @ up).max()), float((mesh @ up).max()) if mesh is not None else -np.inf)
        anchors.append(offsets[n] + (top - float(offsets[n] @ up) + 0.03) * up)
    anchors = np.asarray(anchors, dtype=np.float32)
    traces.append(go.Scatter3d(x=anchors[:, 0], y=anchors[:, 1], z=anchors[:, 2], mode="text", text=labels,
                               name="titles", hoverinfo="skip", textfont=dict(size=12, color="black")))
    figure = (go.FigureWidget if widget else go.Figure)(data=traces)
    return _layout(figure, title, height, view, zoom=1.0 if len(joints) == 1 else 1.5)


def set_hand_data(figure: go.Figure, vertices=None, joints=None) -> None:
    """Move the hand in a figure made by ``hand_figure``: replace the coordinate arrays only.

    Faces, colours and layout stay, so a FigureWidget sends one small message per call.

    Args:
        figure: a figure from ``hand_figure`` (go.Figure or go.FigureWidget).
        vertices: (V, 3) new vertex positions, or None to keep them.
        joints: (21, 3) new keypoints, or None to keep them.
    """
    by_name = {trace.name: trace for trace in figure.data}
    if vertices is not None:
        if "mesh" not in by_name:
            raise ValueError("figure: has no 'mesh' trace; make it with hand_figure(vertices, faces, ...)")
        vertices = _float32(vertices, "vertices", (len(by_name["mesh"].x), 3))
    if joints is not None:
        joints = _float32(joints, "joints", (NUM_KEYPOINTS, 3))
    with figure.batch_update():
        if vertices is not None:
            mesh = by_name["mesh"]
            mesh.x, mesh.y, mesh.z = vertices[:, 0].copy(), vertices[:, 1].copy(), vertices[:, 2].copy()
        if joints is not None:
            for finger in FINGERS:
                if finger in by_name:
                    points = joints[list(FINGER_PATHS[finger])]
                    by_name[finger].x, by_name[finger].y, by_name[finger].z = points[:, 0], points[:, 1], points[:, 2]
            if "labels" in by_name:
                by_name["labels"].x, by_name["labels"].y, by_name["labels"].z = joints[:, 0], joints[:, 1], joints[:, 2]


def mesh_vertices(figure: go.Figure) -> np.ndarray:
    """The (V, 3) vertex positions currently in a ``hand_figure``'s mesh trace (float32)."""
    mesh = next((trace for trace in figure.data if trace.name == "mesh"), None)
    if mesh is None:
        raise ValueError("figure: has no 'mesh' trace")
    return np.stack([np.asarray(mesh.x), np.asarray(mesh.y), np.asarray(mesh.z)], axis=1).astype(np.float32)


__all__ = ["FINGER_PATHS", "SKIN_COLOR", "UIREVISION", "VIEWS", "WRIST_COLOR", "hand_comparison_figure",
           "hand_figure", "hand_mesh_trace",
           "hand_row_figure", "joint_label_trace", "mesh_vertices", "set_hand_data", "skeleton_traces"]


# --------------------------------------------------------------------------------------------
# A static copy: what a reader of a stored notebook sees without a running kernel or JavaScript
# --------------------------------------------------------------------------------------------

def _rgb(color) -> np.ndarray:
    """A plotly colour ("#rrggbb", "rgb(r,g,b)" or a name) as RGB in [0, 1]."""
    from matplotlib.colors import to_rgb

    if isinstance(color, str) and color.startswith("rgb("):
        return np.array([float(c) for c in color[4:-1].split(",")[:3]]) / 255.0
    return np.array(to_rgb(color))


def _colormap(colorscale):
    """A plotly colorscale ((value, colour), ...) as a matplotlib colormap; viridis where there is none."""
    from matplotlib import colormaps
    from matplotlib.colors import LinearSegmentedColormap

    if not colorscale:
        return colormaps["viridis"]
    return LinearSegmentedColormap.from_list("plotly", [(float(value), _rgb(color)) for value, color in colorscale])


def static_picture(figure: go.Figure, ax=None, *, width: float = 7.0, light: float = 0.6):
    """Draw a hand figure of this module with matplotlib, as its scene's camera sees it.

    An orthographic view from the camera's eye: triangles sorted far to near and shaded by the angle
    between their normal and the view direction (Lambert), the skeletons' lines and the text labels on
    top. Meant to sit under the interactive figure, so that a stored notebook shows a picture to a
    reader without a kernel (plotly figures need JavaScript; widgets need a kernel).

    Args:
        figure: a figure from ``hand_figure`` or ``hand_row_figure`` (or a FigureWidget).
        ax: a matplotlib Axes to draw into; None makes a figure ``width`` inches wide.
        width: figure width, inches, when ``ax`` is None.
        light: share of the shading that depends on the normal (0: flat colours).

    Returns:
        the matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    camera = figure.layout.scene.camera
    eye = np.array([camera.eye.x, camera.eye.y, camera.eye.z], dtype=np.float64)
    up = np.array([camera.up.x, camera.up.y, camera.up.z], dtype=np.float64)
    forward = -eye / np.linalg.norm(eye)                              # from the eye towards the centre
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    screen_up = np.cross(right, forward)
    to_screen = lambda p: np.stack([p @ right, p @ screen_up], -1)   # noqa: E731
    if ax is None:
        _, ax = plt.subplots(figsize=(width, width * 0.5))
    colorbar = None
    for trace in figure.data:
        if trace.type == "mesh3d":
            points = np.stack([np.asarray(trace.x), np.asarray(trace.y), np.asarray(trace.z)], -1).astype(np.float64)
            faces = np.stack([np.asarray(trace.i), np.asarray(trace.j), np.asarray(trace.k)], -1).astype(np.int64)
            if trace.intensity is not None:
                values = np.asarray(trace.intensity, dtype=np.float64)
                low = trace.cmin if trace.cmin is not None else values.min()
                high = trace.cmax if trace.cmax is not None else values.max()
                cmap = _colormap(trace.colorscale)            # e.g. the explorer's one-colour "skin" scale
                vertex_rgb = cmap((values - low) / max(high - low, 1e-12))[:, :3]
                if trace.showscale:
                    colorbar = (cmap, low, high, trace.colorbar.title.text if trace.colorbar.title else "")
            elif trace.vertexcolor is not None:
                vertex_rgb = np.stack([_rgb(c) for c in trace.vertexcolor])
            else:
                vertex_rgb = np.tile(_rgb(trace.color or SKIN_COLOR), (len(points), 1))
            triangles = points[faces]                                                # (F, 3, 3)
            normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
            normals /= np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-12)
            shade = (1 - light) + light * np.abs(normals @ forward)                  # two-sided
            face_rgb = np.clip(vertex_rgb[faces].mean(1) * shade[:, None], 0, 1)
            order = np.argsort(-(triangles.mean(1) @ forward))                      # far first
            ax.add_collection(PolyCollection(to_screen(triangles[order]), facecolors=face_rgb[order],
                                             edgecolors="none", alpha=trace.opacity if trace.opacity else 1.0))
        elif trace.type == "scatter3d":
            points = np.stack([np.asarray(trace.x), np.asarray(trace.y), np.asarray(trace.z)], -1).astype(np.float64)
            flat = to_screen(points)
            if "lines" in (trace.mode or ""):
                ax.plot(flat[:, 0], flat[:, 1], "-o", color=trace.line.color, linewidth=1.5, markersize=2, zorder=3)
            elif trace.mode == "text":
                for (x, y), text in zip(flat, trace.text):
                    ax.text(x, y, text, fontsize=7, ha="center", va="bottom", zorder=4)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.axis("off")
    title = figure.layout.title.text if figure.layout.title else None
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        cmap, low, high, label = colorbar
        plt.colorbar(ScalarMappable(Normalize(low, high), cmap), ax=ax, shrink=0.7, label=label)
    return ax


def show_with_static_picture(figure: go.Figure, width: float = 7.0) -> None:
    """Display the interactive figure, then its static picture (``static_picture``) under it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(figure)
    static_picture(figure, width=width)
    plt.show()
