"""Every method on one photo: a box around the hand, its side, and each method's answer side by side.

``predict_every_method`` crops the box out of the photo and runs each method on the crop through
``handlib.predict.predict_images`` (which mirrors a left hand into a right one and the answer back);
``draw_predictions_2d`` draws the 2D skeletons on the photo (matplotlib: it survives in a stored
notebook); ``hands_3d_figure`` puts the 3D hands in one plotly scene the user can turn, a mesh
where the method has one. ``PhotoPanel`` is the same with widgets: upload a photo or type a path,
type the box, choose left or right, press the button.

Example (in a notebook):
    >>> models = evaluate.trained_models()                                          # doctest: +SKIP
    >>> hands = predict_every_method(models, read_image("me.jpg"), (40, 60, 240, 260), "left")  # doctest: +SKIP
    >>> draw_predictions_2d(read_image("me.jpg"), hands, (40, 60, 240, 260))        # doctest: +SKIP
    >>> PhotoPanel(models).widget                                                   # doctest: +SKIP
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from handlib.files import atomic_path
from handlib.images import check_image, read_image

HANDS = ("right", "left")


def check_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` as integer pixels (x0, y0, x1, y1) inside a ``width`` x ``height`` image.

    The box is clipped to the image; x1, y1 are exclusive (the crop is ``image[:, y0:y1, x0:x1]``).

    Raises:
        ValueError: not 4 numbers, or nothing of the box inside the image.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box: expected 4 numbers (x0, y0, x1, y1), pixels of the photo, got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box: expected finite numbers, got {box!r}")
    x0, x1 = sorted((int(round(x0)), int(round(x1))))
    y0, y1 = sorted((int(round(y0)), int(round(y1))))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise ValueError(f"box: {box!r} leaves less than 4 x 4 pixels of the {width} x {height} photo; put it "
                         "around the hand (x0, y0 the top-left corner, x1, y1 the bottom-right)")
    return x0, y0, x1, y1


def predict_every_method(models: dict, image: torch.Tensor, box=None, hand: str = "right",
                         intrinsics=None) -> dict:
    """Each method's answer for the hand inside ``box`` of a photo.

    Args:
        models: {name: (method, model, config)} (``handlib.evaluate.trained_models``).
        image: (3, H, W) float in [0, 1] (``images.read_image``).
        box: (x0, y0, x1, y1) pixels around the hand, or None for the whole photo.
        hand: "right" or "left" (a left hand is mirrored for the methods and back).
        intrinsics: None, or the photo's (fx, fy, cx, cy) in its pixels: the 3D answers are then in
            the photo's camera frame (``predict.predict_images``), else root-relative.

    Returns:
        {name: hand} with the fields of ``predict.predict_images`` (metres), the 2D keypoints in the
        photo's pixels.
    """
    from handlib.predict import check_intrinsics, predict_images

    check_image(image)
    if hand not in HANDS:
        raise ValueError(f"hand: expected 'right' or 'left', got {hand!r}")
    _, height, width = image.shape
    x0, y0, x1, y1 = check_box((0, 0, width, height) if box is None else box, width, height)
    crop = image[:, y0:y1, x0:x1]
    if intrinsics is not None:                                      # the crop's camera: the same, shifted
        fx, fy, cx, cy = check_intrinsics(intrinsics)
        intrinsics = (fx, fy, cx - x0, cy - y0)
    answers = {}
    for name, (method, model, config) in models.items():
        answer = predict_images(method, model, config, [crop], [hand == "right"], intrinsics=intrinsics)[0]
        answer["keypoints_2d"] = answer["keypoints_2d"] + torch.tensor([float(x0), float(y0)])
        answers[name] = answer
    return answers


def predict_photo_files(models: dict, paths, hand: str = "right", box=None, intrinsics=None, out=None,
                        overlay_dir=None) -> tuple[list[dict], list[dict]]:
    """``predict_every_method`` on image files: ``python -m handlib predict all PHOTO --box ...``.

    A file that cannot be read (or whose box misses it) is recorded as an error and the others go on.

    Args:
        models: {name: (method, model, config)}.
        paths: image files (JPEG, PNG, ...), one hand each.
        hand: "right" or "left" for every image.
        box: (x0, y0, x1, y1) of every image, or None for the whole images.
        intrinsics: None or (fx, fy, cx, cy) of every image (see ``predict_every_method``).
        out: the JSON file to write (``predict.write_predictions``), or None.
        overlay_dir: a folder for ``<stem>_methods.png`` (``draw_predictions_2d``: a panel per method), or None.

    Returns:
        (results, errors): one JSON-ready dict per (image, method), {"image", "method", and the fields
        of ``predict.predict_files``' entries}, or {"image", "error"} per image that failed; errors
        are the latter.
    """
    import matplotlib.pyplot as plt

    from handlib.predict import json_entry, overlay_paths, write_predictions

    if hand not in HANDS:
        raise ValueError(f"hand: expected 'right' or 'left', got {hand!r}")
    if not models:
        raise ValueError("models: no method to run (no checkpoint found); train one or name shipped methods")
    paths = list(paths)
    results, errors = [], []
    pictures = overlay_paths(paths, overlay_dir, "_methods.png") if overlay_dir is not None else [None] * len(paths)
    for path, picture in zip(paths, pictures):
        try:
            image = read_image(path)
            answers = predict_every_method(models, image, box, hand, intrinsics)
        except (FileNotFoundError, ValueError) as error:           # ImageError is a ValueError
            message = str(error)
            errors.append({"image": str(path), "error": message if str(path) in message else f"{path}: {message}"})
            results.append(errors[-1])
            continue
        results += [{"method": name, **json_entry(path, answer)} for name, answer in answers.items()]
        if picture is not None:
            figure = draw_predictions_2d(image, answers, box)
            with atomic_path(picture) as tmp:
                figure.savefig(tmp, format="png", dpi=100)
            plt.close(figure)
    if out is not None:
        write_predictions(out, results)
    return results, errors


def draw_predictions_2d(image: torch.Tensor, hands: dict, box=None, columns: int = 4, margin: float = 0.3,
                        panel_inches: float = 2.6):
    """One panel per method: the box of the photo (with ``margin`` of its size around it) and the
    method's 2D skeleton (``plot2d`` colours).

    Args:
        image: (3, H, W) in [0, 1].
        hands: {name: hand} (``predict_every_method``).
        box: (x0, y0, x1, y1) the hand's box, or None for the whole photo.
        columns: panels per row.
        margin: how much of the photo around the box to show, as a fraction of the box's size.
        panel_inches: side of one panel.

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from handlib.viz.plot2d import draw_keypoints_2d, show_image

    check_image(image)
    _, height, width = image.shape
    x0, y0, x1, y1 = check_box((0, 0, width, height) if box is None else box, width, height)
    pad = margin * max(x1 - x0, y1 - y0)
    count = max(len(hands), 1)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(panel_inches * columns, panel_inches * rows + 0.3),
                                squeeze=False)
    for ax, (name, hand) in zip(axes.flat, hands.items()):
        show_image(ax, image)
        draw_keypoints_2d(ax, hand["keypoints_2d"], linewidth=1.5, markersize=2.5)
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="white", linewidth=0.8, linestyle=":")
        ax.set_xlim(max(x0 - pad, 0), min(x1 + pad, width))
        ax.set_ylim(min(y1 + pad, height), max(y0 - pad, 0))
        ax.set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    figure.tight_layout()
    return figure


def hands_3d_figure(hands: dict, widget: bool = False, height: int = 380):
    """The methods' 3D answers in one plotly scene, as the photo's camera sees them (turn it with the
    mouse): each skeleton, with its mesh where the method gives one of the MANO topology.

    Args:
        hands: {name: hand} (``predict_every_method``); methods without 3D are left out.
        widget: a ``go.FigureWidget`` (interactive in a running notebook) instead of a ``go.Figure``.
        height: pixels.

    Returns:
        ``plot3d.hand_comparison_figure`` of the hands with 3D.
    """
    from handlib.mano import ManoLayer
    from handlib.viz.plot3d import hand_comparison_figure

    layer = ManoLayer()
    with_3d = {name: hand for name, hand in hands.items() if hand.get("keypoints_3d") is not None}
    if not with_3d:
        raise ValueError("hands: none of them has 3D keypoints (2D-only methods cannot be drawn in 3D)")
    meshes = [hand["vertices"] if hand.get("vertices") is not None and len(hand["vertices"]) == len(layer.v_template)
              else None for hand in with_3d.values()]
    return hand_comparison_figure([hand["keypoints_3d"] for hand in with_3d.values()], list(with_3d),
                                  vertices=meshes, faces=layer.faces, widget=widget, height=height)


def _uploaded_image(upload) -> torch.Tensor | None:
    """The image of an ipywidgets ``FileUpload`` (versions 7 and 8), read by ``images.read_image``."""
    value = upload.value
    files = list(value.values()) if isinstance(value, dict) else list(value)
    if not files:
        return None
    item = files[-1]
    content = bytes(item["content"])
    name = item.get("name") or item.get("metadata", {}).get("name", "upload.jpg")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(content)
        return read_image(path)


# The photo in the box picker is shown at most this many pixels wide or high (a phone photo would be
# tens of megabytes in the browser); the box is still in the photo's own pixels.
PICKER_PIXELS = 480
PICKER_WIDTH = 480         # the picker's width on the page, pixels
PICKER_GRID = 64           # selectable points per side of the picker: a drag selects a box of them


class PhotoPanel:
    """Widgets around ``predict_every_method``: a photo (upload, or a path), the box around the hand
    (drag a rectangle over the photo, or type it), its side, and a button; the answer appears below
    (the 2D panels, then the 3D scene).

    Args:
        models: {name: (method, model, config)}.
        path: the photo shown first (a path), or None.
        box: its box (x0, y0, x1, y1), or None for the whole photo.
        hand: "right" or "left".

    Attributes:
        widget: the interface, to display.
        picker: the photo as a plotly ``FigureWidget``: a rectangle dragged over it becomes the box
            (``select_box``), drawn in white.
        output: the ``widgets.Output`` the answers go to.
    """

    def __init__(self, models: dict, path=None, box=None, hand: str = "right"):
        import ipywidgets as widgets
        import plotly.graph_objects as go

        self.models = models
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload a photo")
        self.path = widgets.Text(value="" if path is None else str(path), description="or a file",
                                 continuous_update=False, layout=widgets.Layout(width="420px"))
        box = (0, 0, 0, 0) if box is None else box
        self.box = [widgets.IntText(value=int(v), description=label, layout=widgets.Layout(width="140px"))
                    for v, label in zip(box, ("x0", "y0", "x1", "y1"))]
        self.whole = widgets.Checkbox(value=box == (0, 0, 0, 0), description="the whole photo is the hand's box")
        self.hand = widgets.ToggleButtons(options=list(HANDS), value=hand, description="hand")
        self.button = widgets.Button(description="predict with every method", icon="hand-paper-o",
                                     layout=widgets.Layout(width="260px"))
        self.output = widgets.Output()
        self.picker = go.FigureWidget(layout=dict(height=300, width=PICKER_WIDTH, dragmode="select",
                                                  margin=dict(l=0, r=0, t=0, b=0), xaxis=dict(visible=False),
                                                  yaxis=dict(visible=False)))
        self.button.on_click(lambda _: self.run())
        self.upload.observe(lambda _: self.show_photo(), "value")
        self.path.observe(lambda _: self.show_photo(), "value")
        for field in (*self.box, self.whole):
            field.observe(lambda _: self._draw_box(), "value")
        hint = widgets.Label("drag a rectangle around the hand on the photo, or type its box:")
        self.widget = widgets.VBox([widgets.HBox([self.upload, self.path]), self.picker, hint, widgets.HBox(self.box),
                                    self.whole, self.hand, self.button, self.output])
        if path is not None:
            self.show_photo()

    def show_photo(self) -> None:
        """Put the current photo (``image``) in the picker, with a grid of invisible points to select."""
        import plotly.graph_objects as go
        import torch.nn.functional as F

        try:
            image = self.image()
        except (FileNotFoundError, ValueError) as error:
            with self.output:
                print(f"error: {error}")
            return
        _, height, width = image.shape
        scale = min(1.0, PICKER_PIXELS / max(height, width))
        shown = F.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True)[0] if scale < 1 else image
        pixels = (shown.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        xs, ys = torch.meshgrid(torch.linspace(0, width, PICKER_GRID), torch.linspace(0, height, PICKER_GRID),
                                indexing="xy")
        grid = go.Scatter(x=xs.flatten().tolist(), y=ys.flatten().tolist(), mode="markers", hoverinfo="skip",
                          marker=dict(size=6, color="rgba(0, 0, 0, 0)"), showlegend=False,
                          unselected=dict(marker=dict(opacity=0)), selected=dict(marker=dict(opacity=0)))
        with self.picker.batch_update():
            self.picker.data = []
            self.picker.add_trace(go.Image(z=pixels, dx=1 / scale, dy=1 / scale, hoverinfo="skip"))
            self.picker.add_trace(grid)
            self.picker.update_xaxes(range=[0, width])
            self.picker.update_yaxes(range=[height, 0], scaleanchor="x")
            self.picker.layout.height = round(PICKER_WIDTH * min(height / width, 1.2))
        self.picker.data[1].on_selection(self._on_selection)
        self._draw_box()

    def select_box(self, x_range, y_range) -> None:
        """Make (x_range, y_range), pixels of the photo, the hand's box (the picker's callback)."""
        (x0, x1), (y0, y1) = sorted(x_range), sorted(y_range)
        for field, value in zip(self.box, (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))):
            field.value = int(value)
        self.whole.value = False

    def _on_selection(self, trace, points, selector) -> None:
        if getattr(selector, "xrange", None) is not None and getattr(selector, "yrange", None) is not None:
            self.select_box(selector.xrange, selector.yrange)

    def _draw_box(self) -> None:
        """Draw the typed or dragged box on the picker (nothing for the whole photo)."""
        if not self.picker.data:
            return
        x0, y0, x1, y1 = (field.value for field in self.box)
        shapes = [] if self.whole.value else [dict(type="rect", x0=x0, y0=y0, x1=x1, y1=y1,
                                                   line=dict(color="white", width=2, dash="dot"))]
        self.picker.layout.shapes = shapes

    def image(self) -> torch.Tensor:
        """The uploaded photo if there is one, else the one at the path."""
        uploaded = _uploaded_image(self.upload)
        if uploaded is not None:
            return uploaded
        if not self.path.value.strip():
            raise ValueError("no photo: upload one, or type the path of a JPEG or PNG file")
        return read_image(self.path.value.strip())

    def run(self) -> None:
        """Predict and draw into ``output`` (errors are printed there, saying what to fix)."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.output.clear_output()
        with self.output:
            try:
                image = self.image()
                box = None if self.whole.value else tuple(w.value for w in self.box)
                hands = predict_every_method(self.models, image, box, self.hand.value)
            except (FileNotFoundError, ValueError) as error:
                print(f"error: {error}")
                return
            if not hands:
                print("no method to run: no shipped checkpoint was found")
                return
            draw_predictions_2d(image, hands, box)
            plt.show()
            if any(hand.get("keypoints_3d") is not None for hand in hands.values()):
                display(hands_3d_figure(hands, widget=True))


__all__ = ["PhotoPanel", "check_box", "draw_predictions_2d", "hands_3d_figure", "predict_every_method",
           "predict_photo_files"]
