"""An interactive hand: sliders for shape, pose and rotation drive a 3D plot of the MANO mesh.

The figure is a plotly ``FigureWidget`` built once; each slider step runs the hand model once
(batch of 1, no gradients) and replaces only the coordinate arrays of the mesh and the skeleton
inside ``figure.batch_update()``, so the browser receives one small message (float32 buffers)
and keeps its camera. Faces never change and are never sent again.

The finger pose shown is the sum of two parts, each with its own tab of sliders:

    theta_fingers = hands_mean (only if not flat_hand_mean) + sum_c a_c P_c + delta

with a_c the PCA coefficients ("PCA pose" tab) and delta the per-joint axis-angles ("joint" tab:
pick a joint, turn its three sliders).

A hand to start from (a prediction, a fit) is given as the sliders' starting values; "reset" goes
back to it.

Example (in a notebook):
    >>> explorer = HandExplorer(num_pca_comps=6)                 # doctest: +SKIP
    >>> explorer.widget                                          # doctest: +SKIP
    >>> explorer.set(betas=[2.0], pca=[1.0, -0.5])               # doctest: +SKIP
    >>> HandExplorer(model.mano, 12, betas=prediction.mano_betas[0], pca=prediction.extras["hand_pose"][0],
    ...              global_orient=prediction.mano_pose[0, :3], view="camera")         # doctest: +SKIP
"""
from __future__ import annotations

import time
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch

from handlib.mano.io import ManoModel
from handlib.mano.layer import ManoLayer
from handlib.runtime import torch_threads
from handlib.skeleton import MANO_JOINT_NAMES
from handlib.viz.plot3d import SKIN_COLOR, hand_figure, mesh_vertices, set_hand_data

BETA_RANGE = 3.0  # shape coefficients are in standard deviations of the shape space
PCA_RANGE = 3.0
JOINT_RANGE = 1.6  # radians, about 90 degrees either way
ROTATION_RANGE = float(np.pi)
# The 15 finger joints a per-joint slider can turn, MANO's order (index1 .. thumb3).
FINGER_JOINTS = MANO_JOINT_NAMES[1:]
LABEL_STYLE = {"description_width": "70px"}
NO_COLOR = -1  # the colour menu's "skin" entry (ipywidgets shows a None value as an empty menu)


def _slider(description: str, bound: float, step: float, continuous_update: bool) -> widgets.FloatSlider:
    return widgets.FloatSlider(value=0.0, min=-bound, max=bound, step=step, description=description,
                               continuous_update=continuous_update, readout_format=".2f",
                               layout=widgets.Layout(width="320px"), style=LABEL_STYLE)


class HandExplorer:
    """Sliders for the 10 betas, the PCA pose coefficients, any joint's axis-angle and the global
    rotation, a reset button, and "colour by skinning weight", driving one 3D figure.

    Args:
        layer: a ManoLayer (its model and ``flat_hand_mean`` are used; its pose space need not
            be axis-angle), a ManoModel, a path to a MANO file, or None for the open hand.
        num_pca_comps: how many PCA coefficient sliders (1..number of components of the model).
        betas: the starting shape, up to K coefficients (the rest 0); None = 0.
        pca: the starting PCA pose, up to ``num_pca_comps`` coefficients (around ``hands_mean``
            unless the layer has ``flat_hand_mean``); None = 0.
        global_orient: the starting global rotation, 3 axis-angle components, radians; None = 0.
            ``reset`` returns to this starting hand. A slider whose starting value lies outside its
            range (shape and pose: [-3, 3]; rotation: [-pi, pi]) is widened to hold it: a regressed
            hand can lie several standard deviations outside MANO's usual shapes.
        view: the figure's starting view, "model" (MANO's template frame) or "camera" (as a camera
            sees a hand whose rotation is in camera axes; see ``plot3d.hand_figure``).
        continuous_update: update while a slider is dragged (one model run per step, a few
            milliseconds) rather than only on release.
        height: figure height, pixels.

    Raises:
        ValueError: a wrong layer or ``num_pca_comps``; too many starting values, or not finite.

    Attributes:
        figure: the go.FigureWidget.
        widget: the whole interface (figure and controls), to display.
        last_update_ms: kernel-side time of the last update (model forward + figure update).
    """

    def __init__(self, layer: ManoLayer | ManoModel | str | Path | None = None, num_pca_comps: int = 6, *,
                 betas=None, pca=None, global_orient=None, view: str = "model", continuous_update: bool = True,
                 height: int = 480):
        if isinstance(layer, ManoLayer):
            model, flat_hand_mean = layer.model, layer.flat_hand_mean
        elif layer is None or isinstance(layer, (ManoModel, str, Path)):
            model, flat_hand_mean = layer, True
        else:
            raise ValueError(f"layer: expected a ManoLayer, ManoModel, path or None, got {type(layer).__name__}")
        # The explorer always poses the fingers in axis-angle and applies the PCA basis itself,
        # so the PCA and the per-joint sliders can add up.
        self.layer = ManoLayer(model, num_pca_comps=None, flat_hand_mean=flat_hand_mean)
        num_components = self.layer.hands_components.shape[0]
        if not isinstance(num_pca_comps, int) or not 1 <= num_pca_comps <= num_components:
            raise ValueError(f"num_pca_comps: expected an int in 1..{num_components}, got {num_pca_comps!r}")
        self.num_pca_comps = num_pca_comps
        self._components = self.layer.hands_components[:num_pca_comps]  # (C, 45)
        self._weights = self.layer.weights.numpy()  # (V, 16)
        self._joint_pose = np.zeros((len(FINGER_JOINTS), 3))  # per-joint axis-angle offsets, radians
        self._hold = False  # True while several sliders change at once (one update at the end)
        self.last_update_ms = float("nan")

        self.beta_sliders = [_slider(f"β{k}", BETA_RANGE, 0.1, continuous_update) for k in range(self.layer.num_betas)]
        self.pca_sliders = [_slider(f"PC {c + 1}", PCA_RANGE, 0.1, continuous_update) for c in range(num_pca_comps)]
        self.joint_dropdown = widgets.Dropdown(options=list(FINGER_JOINTS), value=FINGER_JOINTS[0], description="joint",
                                               layout=widgets.Layout(width="320px"), style=LABEL_STYLE)
        self.joint_sliders = [_slider(f"axis {axis}", JOINT_RANGE, 0.05, continuous_update) for axis in "xyz"]
        self.rotation_sliders = [_slider(f"rot {axis}", ROTATION_RANGE, 0.05, continuous_update) for axis in "xyz"]
        self.color_dropdown = widgets.Dropdown(
            options=[("skin", NO_COLOR)] + [(f"skinning weight of {name}", k)
                                            for k, name in enumerate(MANO_JOINT_NAMES)],
            value=NO_COLOR, description="colour", layout=widgets.Layout(width="320px"), style=LABEL_STYLE)
        self.reset_button = widgets.Button(description="reset", icon="undo", layout=widgets.Layout(width="120px"))
        self.status = widgets.Label(value="")

        # The starting hand: the sliders' first values, and where "reset" goes back to.
        starts = [("betas", betas, self.beta_sliders), ("pca", pca, self.pca_sliders),
                  ("global_orient", global_orient, self.rotation_sliders)]
        self._start = [(self._checked_values(name, np.zeros(0) if values is None else values, sliders,
                                             exact=name == "global_orient" and values is not None, widen=True),
                        sliders) for name, values, sliders in starts]
        for values, sliders in self._start:
            for value, slider in zip(values, sliders):
                bound = max(slider.max, np.ceil(abs(value) * 10) / 10)
                slider.min, slider.max = -bound, bound               # widened where the start lies outside
                slider.value = float(value)
        out = self._forward()
        self.figure = hand_figure(out.vertices[0], self.layer.faces, out.joints[0], widget=True, height=height,
                                  view=view)
        self._set_colors(NO_COLOR)

        for slider in self.beta_sliders + self.pca_sliders + self.rotation_sliders:
            slider.observe(self._on_value, names="value")
        for slider in self.joint_sliders:
            slider.observe(self._on_joint_slider, names="value")
        self.joint_dropdown.observe(self._on_joint_choice, names="value")
        self.color_dropdown.observe(lambda change: self._set_colors(change["new"]), names="value")
        self.reset_button.on_click(lambda _: self.reset())

        tabs = widgets.Tab(children=[widgets.VBox(self.beta_sliders), widgets.VBox(self.pca_sliders),
                                     widgets.VBox([self.joint_dropdown] + self.joint_sliders),
                                     widgets.VBox(self.rotation_sliders)])
        for index, title in enumerate(["shape β", "PCA pose", "joint", "rotation"]):
            tabs.set_title(index, title)
        controls = widgets.VBox([self.color_dropdown, self.reset_button, self.status])
        self.widget = widgets.VBox([self.figure, widgets.HBox([tabs, controls])])

    # ---------------------------------------------------------------------------------------------
    # The model

    def parameters(self) -> dict[str, torch.Tensor]:
        """The current slider state as the layer's inputs: hand_pose (1, 45) axis-angle (PCA part
        plus per-joint part, without hands_mean), betas (1, K), global_orient (1, 3)."""
        pca = torch.tensor([[s.value for s in self.pca_sliders]], dtype=torch.float32)  # (1, C)
        per_joint = torch.as_tensor(self._joint_pose, dtype=torch.float32).reshape(1, 45)
        return {"hand_pose": pca @ self._components + per_joint,
                "betas": torch.tensor([[s.value for s in self.beta_sliders]], dtype=torch.float32),
                "global_orient": torch.tensor([[s.value for s in self.rotation_sliders]], dtype=torch.float32)}

    def _forward(self):
        # One hand is too little work to share between threads: on one thread the step is fastest,
        # and it does not stall when other processes keep the other cores busy (OpenMP threads
        # then wait for each other at every operation: 30x slower on a busy 2-core machine).
        with torch.no_grad(), torch_threads(1):
            return self.layer(**self.parameters())

    def update(self) -> float:
        """Run the model on the slider values and move the hand in the figure.

        Returns:
            The kernel-side time it took (model forward + figure update), milliseconds.
        """
        start = time.perf_counter()
        out = self._forward()
        set_hand_data(self.figure, out.vertices[0].numpy(), out.joints[0].numpy())
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        self.status.value = f"update: {self.last_update_ms:.1f} ms (model + figure, kernel side)"
        return self.last_update_ms

    # ---------------------------------------------------------------------------------------------
    # Callbacks

    def _on_value(self, change):
        if not self._hold:
            self.update()

    def _on_joint_slider(self, change):
        if self._hold:
            return
        joint = FINGER_JOINTS.index(self.joint_dropdown.value)
        self._joint_pose[joint] = [s.value for s in self.joint_sliders]
        self.update()

    def _on_joint_choice(self, change):
        # Show the chosen joint's stored angles on the three sliders without moving the hand.
        joint = FINGER_JOINTS.index(change["new"])
        held, self._hold = self._hold, True
        try:
            for slider, value in zip(self.joint_sliders, self._joint_pose[joint]):
                slider.value = float(value)
        finally:
            self._hold = held

    def _set_colors(self, joint: int):
        # The mesh always carries a per-vertex intensity, and "skin" is a one-colour scale: switching
        # changes values only. (Removing the intensity again leaves plotly.js drawing a colour ramp.)
        mesh = self.figure.data[0]
        with self.figure.batch_update():
            if joint == NO_COLOR:
                mesh.update(intensity=np.zeros(len(self._weights), dtype=np.float32), intensitymode="vertex",
                            colorscale=[[0.0, SKIN_COLOR], [1.0, SKIN_COLOR]], cmin=0.0, cmax=1.0, showscale=False)
            else:
                mesh.update(intensity=self._weights[:, joint].astype(np.float32), intensitymode="vertex",
                            colorscale="Viridis", cmin=0.0, cmax=1.0, showscale=True,
                            colorbar=dict(title=dict(text=f"w {MANO_JOINT_NAMES[joint]}"), len=0.6, thickness=12))

    # ---------------------------------------------------------------------------------------------
    # Python-side control (what the sliders do, from code)

    def set(self, betas=None, pca=None, global_orient=None, joint: str | None = None, joint_pose=None,
            color_by: str | int | None = "keep") -> float:
        """Set several sliders at once, then update the figure once.

        Args:
            betas: up to K shape coefficients (the first ones; the rest keep their value), each
                in [-3, 3].
            pca: up to num_pca_comps PCA coefficients, each in [-3, 3].
            global_orient: 3 axis-angle components, radians, each in [-pi, pi].
            joint: a finger joint name from ``FINGER_JOINTS`` (e.g. "index1") to select.
            joint_pose: 3 axis-angle components for ``joint`` (or the selected joint), radians,
                each in [-1.6, 1.6].
            color_by: a MANO joint name or index to colour by its skinning weights, None for
                skin colour, "keep" to leave it.

        Returns:
            Milliseconds the update took (kernel side).

        Raises:
            ValueError: too many values, a value out of its slider's range, an unknown joint or
                colour; nothing is changed then.
        """
        # Check everything first, so that bad input leaves the explorer as it was.
        groups = [(self._checked_values(name, values, sliders, exact=name in ("global_orient", "joint_pose")), sliders)
                  for name, values, sliders in [("betas", betas, self.beta_sliders), ("pca", pca, self.pca_sliders),
                                                ("global_orient", global_orient, self.rotation_sliders),
                                                ("joint_pose", joint_pose, self.joint_sliders)]
                  if values is not None]
        if joint is not None and joint not in FINGER_JOINTS:
            raise ValueError(f"joint: expected one of {', '.join(FINGER_JOINTS)}, got {joint!r}")
        if color_by is None:
            color_by = NO_COLOR
        elif isinstance(color_by, str) and color_by != "keep":
            if color_by not in MANO_JOINT_NAMES:
                raise ValueError(f"color_by: expected None, a joint index or one of {MANO_JOINT_NAMES}, "
                                 f"got {color_by!r}")
            color_by = MANO_JOINT_NAMES.index(color_by)
        elif not (color_by == "keep" or isinstance(color_by, int) and 0 <= color_by < len(MANO_JOINT_NAMES)):
            raise ValueError(f"color_by: expected None, a joint index 0..15 or a joint name, got {color_by!r}")

        self._hold = True
        try:
            if joint is not None:
                self.joint_dropdown.value = joint        # shows its stored angles (_on_joint_choice)
            for values, sliders in groups:
                for value, slider in zip(values, sliders):
                    slider.value = float(value)
            if joint_pose is not None:
                self._joint_pose[FINGER_JOINTS.index(self.joint_dropdown.value)] = [s.value for s in self.joint_sliders]
        finally:
            self._hold = False
        if color_by != "keep":
            self.color_dropdown.value = color_by
        return self.update()

    @staticmethod
    def _checked_values(name: str, values, sliders, exact: bool, widen: bool = False) -> np.ndarray:
        """``values`` as floats, or a ValueError if there are too many or one is outside its slider's range
        (with ``widen``: one that is not finite)."""
        values = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float).ravel()
        if len(values) > len(sliders) or (exact and len(values) != len(sliders)):
            expected = f"{len(sliders)}" if exact else f"at most {len(sliders)}"
            raise ValueError(f"{name}: expected {expected} values, got {len(values)}")
        for value, slider in zip(values, sliders):
            if widen and not np.isfinite(value):
                raise ValueError(f"{name}: expected finite values, got {value}")
            if not widen and not slider.min <= value <= slider.max:
                raise ValueError(f"{name}: {value:.3f} is outside the slider range [{slider.min}, {slider.max}]")
        return values

    def reset(self) -> float:
        """All sliders back to the starting hand (zero unless given: the mean shape, the rest pose, no
        rotation), no per-joint offset, and skin colour; one update."""
        self._hold = True
        try:
            for slider in self.beta_sliders + self.pca_sliders + self.rotation_sliders + self.joint_sliders:
                slider.value = 0.0
            for values, sliders in self._start:
                for value, slider in zip(values, sliders):
                    slider.value = float(value)
            self._joint_pose[:] = 0.0
        finally:
            self._hold = False
        self.color_dropdown.value = NO_COLOR
        return self.update()

    # ---------------------------------------------------------------------------------------------
    # Reading the state back

    def vertices(self) -> np.ndarray:
        """(V, 3) float32: the mesh vertices currently in the figure, metres."""
        return mesh_vertices(self.figure)

    def time_updates(self, repeats: int = 20, kind: str = "pca") -> np.ndarray:
        """Time ``repeats`` slider steps of one kind, as a user dragging a slider would cause them.

        Args:
            repeats: number of steps.
            kind: "beta", "pca", "joint" or "rotation": which slider moves.

        Returns:
            (repeats,) kernel-side milliseconds per step (model forward + figure update).
        """
        sliders = {"beta": self.beta_sliders, "pca": self.pca_sliders, "joint": self.joint_sliders,
                   "rotation": self.rotation_sliders}
        if kind not in sliders:
            raise ValueError(f"kind: expected one of {tuple(sliders)}, got {kind!r}")
        slider = sliders[kind][0]
        start_value, times = slider.value, []
        for step in range(repeats):
            slider.value = round(start_value + 0.05 * (1 + step % 10), 3)  # fires the callback, as a drag does
            times.append(self.last_update_ms)
        slider.value = start_value
        return np.asarray(times)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
