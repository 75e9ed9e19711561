"""Checks for the notebooks' exercises, with messages that say what is wrong.

The course's exercise convention (DESIGN.md): an exercise is a code cell whose answer sits between
nbgrader's markers ``### BEGIN SOLUTION`` and ``### END SOLUTION``, followed by a check cell that
calls one function of this module with the student's code::

    def relative_depth(depth):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

    exercises.check_relative_depth(relative_depth)      # prints what passed, or raises ExerciseError

The committed notebooks are the instructor versions; ``student_version`` turns a cell's source into
the student's (the answer replaced by ``raise NotImplementedError()``), and the tests run every
check on both: the stub must fail with a message that says what to do, the answer must pass.

A check compares the student's function with the course's own implementation (the one handlib
uses) on seeded inputs, including the edge cases, and names the first thing that differs. An
experiment ("run this and read a number") is an exercise too: a function without arguments that
returns the number, so that its stub fails the check the same way.

Answers to the questions in the text live in **instructor-only cells**: a markdown cell whose first
line is ``<!-- INSTRUCTOR -->`` (the marker is an HTML comment, invisible when rendered), holding a
collapsed block::

    <!-- INSTRUCTOR -->
    <details><summary><b>Answer</b> (instructor version only)</summary>

    The answer, in markdown.

    </details>

(A cell tagged ``instructor`` counts too.) ``student_notebook`` removes these cells, stubs every
solution and clears the outputs of the exercise and check cells; ``write_student_notebooks`` (what
``make student`` and ``python -m handlib student`` run) writes the student versions of the notebooks.
"""
from __future__ import annotations

import re

import torch

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
STUB = "raise NotImplementedError()"
INSTRUCTOR_MARKER = "<!-- INSTRUCTOR -->"
INSTRUCTOR_TAG = "instructor"
_SOLUTION = re.compile(r"^([ \t]*)" + re.escape(BEGIN_SOLUTION) + r"[ \t]*\n.*?^[ \t]*" + re.escape(END_SOLUTION)
                       + r"[ \t]*$", re.DOTALL | re.MULTILINE)


class ExerciseError(AssertionError):
    """The answer to an exercise is not right yet; the message says what differs and what to try."""


def has_solution(source: str) -> bool:
    """Whether a cell's source holds an answer between the solution markers."""
    return bool(_SOLUTION.search(source))


def student_version(source: str) -> str:
    """A cell's source as the student gets it: every answer replaced by ``# YOUR CODE HERE`` and
    ``raise NotImplementedError()`` at the indentation of its ``### BEGIN SOLUTION`` marker.

    Raises:
        ValueError: a ``### BEGIN SOLUTION`` without its ``### END SOLUTION`` (or the reverse).
    """
    if source.count(BEGIN_SOLUTION) != source.count(END_SOLUTION):
        raise ValueError(f"source: every {BEGIN_SOLUTION!r} needs an {END_SOLUTION!r} after it, on a line of "
                         f"its own; got {source.count(BEGIN_SOLUTION)} and {source.count(END_SOLUTION)}")
    return _SOLUTION.sub(lambda match: f"{match.group(1)}# YOUR CODE HERE\n{match.group(1)}{STUB}", source)


def _call(function, name: str, *args):
    """Run the student's function; a stub or a crash becomes an ExerciseError that says so."""
    try:
        return function(*args)
    except NotImplementedError:
        raise ExerciseError(f"{name} is not written yet: replace `raise NotImplementedError()` in the cell above "
                            "with your code, run that cell, then this one") from None
    except ExerciseError:
        raise
    except Exception as error:          # the student's bug: report it here, with the inputs' shapes
        shapes = ", ".join(str(tuple(a.shape)) if torch.is_tensor(a) else type(a).__name__ for a in args)
        raise ExerciseError(f"{name} raised {type(error).__name__}: {error} (called with inputs of shapes "
                            f"{shapes})") from error


def _expect_tensor(value, name: str, shape: tuple) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise ExerciseError(f"{name} should return a torch tensor of shape {shape}, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ExerciseError(f"{name} should return shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ExerciseError(f"{name} returned NaN or inf at {int((~torch.isfinite(value)).sum())} places; "
                            "where there is nothing to average, the answer should be 0")
    return value


# --------------------------------------------------------------------------------------------
# Student notebooks: answers out, solutions stubbed, exercise outputs cleared
# --------------------------------------------------------------------------------------------

def cell_source(cell: dict) -> str:
    """A notebook cell's source as one string (nbformat stores a string or a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def is_instructor_only(cell: dict) -> bool:
    """Whether a notebook cell (nbformat dict) is for the instructor only: a markdown cell whose first
    line is ``<!-- INSTRUCTOR -->``, or any cell tagged ``instructor``."""
    source = cell_source(cell)
    tagged = INSTRUCTOR_TAG in cell.get("metadata", {}).get("tags", [])
    return tagged or (cell.get("cell_type") == "markdown" and source.lstrip().startswith(INSTRUCTOR_MARKER))


def _is_check(source: str) -> bool:
    return "exercises.check_" in source


def student_notebook(notebook: dict) -> dict:
    """The student version of a notebook (an nbformat 4 dict; the input is not changed).

    * instructor-only cells (``is_instructor_only``: the answers to the text's questions) are removed;
    * every answer between the solution markers becomes ``# YOUR CODE HERE`` and ``raise NotImplementedError()``
      (``student_version``);
    * the outputs and execution counts of the exercise cells and of their check cells are cleared
      (they would show the answer); every other output stays, so the stored figures still read.
    """
    import copy

    student = copy.deepcopy(notebook)
    cells = []
    for cell in student["cells"]:
        if is_instructor_only(cell):
            continue
        source = cell_source(cell)
        if cell["cell_type"] == "code" and (has_solution(source) or _is_check(source)):
            cell["source"] = student_version(source)
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    student["cells"] = cells
    student.get("metadata", {}).pop("widgets", None)
    return student


def write_student_notebooks(notebooks, out_dir) -> list:
    """Write the student version of each notebook (paths) into ``out_dir``, same file names.

    Returns:
        the written paths. Raises ValueError if a notebook's solution markers do not pair up.
    """
    import json
    from pathlib import Path

    from handlib.files import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, notebooks):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        try:
            student = student_notebook(notebook)
        except ValueError as error:
            raise ValueError(f"{path.name}: {error}") from None
        written.append(atomic_write_text(out_dir / path.name, json.dumps(student, indent=1, ensure_ascii=False) + "\n"))
    return written


# --------------------------------------------------------------------------------------------
# Chapter 0: why is it hard
# --------------------------------------------------------------------------------------------

def _cameras(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (2, 7, 3) metres in front of two different cameras K (2, 3, 3): fx != fy, cx != cy."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(2, 7, 3, generator=generator) * torch.tensor([0.3, 0.2, 0.6]) - torch.tensor([0.15, 0.1, -0.3])
    K = torch.tensor([[[500.0, 0.0, 64.0], [0.0, 450.0, 60.0], [0.0, 0.0, 1.0]],
                      [[300.0, 0.0, 112.0], [0.0, 320.0, 100.0], [0.0, 0.0, 1.0]]])
    return points, K


def check_project(project) -> None:
    """Chapter 0, exercise 1: the pinhole projection.

    ``project(points, K)``: points (B, N, 3) in the camera frame (z forward), K (B, 3, 3) ->
    (B, N, 2) pixels, u = fx x / z + cx, v = fy y / z + cy.

    Raises:
        ExerciseError: what differs from ``handlib.geometry.project_points``.
    """
    from handlib.geometry import project_points

    points, K = _cameras()
    expected = project_points(points, K)
    answer = _expect_tensor(_call(project, "project", points.clone(), K.clone()), "project", (2, 7, 2))
    homogeneous = points @ K.transpose(-1, -2)
    if torch.allclose(answer, homogeneous[..., :2], atol=1e-3):
        raise ExerciseError("you returned K X without dividing by the depth: u and v are (K X)[:2] / z, "
                            "which is why every point on a ray lands on the same pixel")
    wrong_order = points @ K
    if torch.allclose(answer, wrong_order[..., :2] / wrong_order[..., 2:], atol=1e-3):
        raise ExerciseError("you multiplied by K instead of its transpose: for row vectors, K X is "
                            "points @ K.transpose(-1, -2)")
    if torch.allclose(answer, expected - K[:, None, :2, 2], atol=1e-3):
        raise ExerciseError("the principal point is missing: add cx to u and cy to v (K[:, 0, 2], K[:, 1, 2])")
    swapped = torch.stack([K[:, None, 1, 1] * points[..., 0], K[:, None, 0, 0] * points[..., 1]], -1) / points[..., 2:]
    if torch.allclose(answer, swapped + K[:, None, :2, 2], atol=1e-3):
        raise ExerciseError("fx and fy are swapped: u uses fx = K[0, 0], v uses fy = K[1, 1]")
    if torch.allclose(answer, expected[:, :1].expand_as(expected), atol=1e-3) or \
            torch.allclose(answer, project_points(points, K[:1].expand_as(K)), atol=1e-3):
        raise ExerciseError("each sample has its own camera: project the points of sample b with K[b]")
    if not torch.allclose(answer, expected, atol=1e-3):
        worst = (answer - expected).norm(dim=-1).max().item()
        raise ExerciseError(f"some pixels are off by up to {worst:.2f} px; u = fx x / z + cx, v = fy y / z + cy")
    print("project: correct (the same as handlib.geometry.project_points, two cameras)")


def _patches(seed: int = 0) -> torch.Tensor:
    """(5, 3, 6, 6): two patches alike up to brightness and contrast, two random ones, one uniform."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.rand(3, 6, 6, generator=generator)
    others = torch.rand(2, 3, 6, 6, generator=generator)
    return torch.stack([first, 0.5 * first + 0.3, *others, torch.full((3, 6, 6), 0.5)])


def check_patch_similarity(similarity) -> None:
    """Chapter 0, exercise 2: normalised cross-correlation between patches.

    ``similarity(patches)``: (N, C, h, w) -> (N, N), entry (i, j) the correlation of the two patches'
    pixel values (each patch flattened, its mean subtracted, divided by its norm); 1 for two patches
    alike up to brightness and contrast, 0 for a uniform patch (it has no contrast to correlate).

    Raises:
        ExerciseError: what differs from ``handlib.viz.challenges.patch_similarity``.
    """
    from handlib.viz.challenges import patch_similarity

    patches = _patches()
    expected = patch_similarity(patches)
    answer = _call(similarity, "similarity", patches.clone())
    if torch.is_tensor(answer) and answer.shape == (5, 5) and not torch.isfinite(answer).all():
        raise ExerciseError("NaN: the last patch is uniform, so its norm after subtracting the mean is 0; "
                            "divide by the norm clamped to a small number (clamp_min(1e-9)): its similarity "
                            "is then 0")
    answer = _expect_tensor(answer, "similarity", (5, 5))
    flat = patches.flatten(1)
    cosine = (flat / flat.norm(dim=1, keepdim=True)) @ (flat / flat.norm(dim=1, keepdim=True)).T
    if torch.allclose(answer, cosine, atol=1e-4):
        raise ExerciseError("that is the cosine of the raw pixels: subtract each patch's mean first, or a "
                            "brighter copy of the same patch is not 'the same up to brightness'")
    if abs(answer[0, 1].item() - 1) > 1e-3:
        raise ExerciseError(f"patch 1 is patch 0 at half the contrast, plus 0.3: their similarity should be 1, "
                            f"got {answer[0, 1].item():.3f}; divide by each patch's norm after subtracting its mean")
    if not torch.allclose(answer, expected, atol=1e-4):
        worst = (answer - expected).abs().max().item()
        raise ExerciseError(f"off by up to {worst:.3f} from the normalised cross-correlation: flatten each "
                            "patch (all channels), subtract its mean, divide by its norm, then take dot products")
    print("similarity: correct (the same as handlib.viz.challenges.patch_similarity)")


def check_fist_components(fist_components) -> None:
    """Chapter 0, exercise 3 (an experiment): ``fist_components()`` returns how many principal
    components hold 90 % of the variance of 2000 poses of one grasp, ``kind="fist"``
    (``sample_poses(2000, generator=0, kind="fist")``).

    Raises:
        ExerciseError: a number that is not the count for fists, with the likely reason.
    """
    from handlib.mano.prior import sample_poses
    from handlib.viz.challenges import pose_space_variance

    def needed(kind, seed=0):
        return int((pose_space_variance(sample_poses(2000, generator=seed, kind=kind)) < 0.9).sum()) + 1

    components = _call(fist_components, "fist_components")
    if isinstance(components, torch.Tensor):
        components = components.item()
    if not isinstance(components, (int, float)) or components != int(components):
        raise ExerciseError(f"give a whole number of components, got {components!r}")
    components, expected = int(components), needed("fist")
    if components == needed("mixture") and components != expected:
        raise ExerciseError(f"{components} is the count for the mixture of all grasps (the cell above); "
                            "draw fists only: sample_poses(2000, generator=0, kind='fist')")
    if components == expected - 1:
        raise ExerciseError(f"{components} components hold *less* than 90 %: count the first k at which the "
                            "cumulative variance reaches 0.9 (the number below 0.9, plus one)")
    if components != expected:
        raise ExerciseError(f"{components} is not what the fist poses give; compute pose_space_variance of the "
                            "2000 fist poses and take the smallest k with explained[k - 1] >= 0.9")
    print(f"fist poses: correct, {expected} components hold 90 % of their variance "
          f"(the mixture of all grasps needs {needed('mixture')})")


# --------------------------------------------------------------------------------------------
# Chapter 1: the MANO hand model
# --------------------------------------------------------------------------------------------

def _model_tensors():
    from handlib.mano import ManoLayer, default_model_path, load_mano

    return ManoLayer(load_mano(default_model_path()))


def check_shape_blend(shape_blend) -> None:
    """Chapter 1, exercise 1: MANO's shape blend, T_S(beta) = T + sum_k beta_k S_k.

    ``shape_blend(v_template, shapedirs, betas)``: (V, 3), (V, 3, K), (B, K') with K' <= K ->
    (B, V, 3); with fewer coefficients than directions, the first K' directions.

    Raises:
        ExerciseError: what differs from ``handlib.mano.layer.shape_blend``.
    """
    from handlib.mano import layer as mano

    hand = _model_tensors()
    generator = torch.Generator().manual_seed(2)
    betas = 1.5 * torch.randn(3, 10, generator=generator)
    expected = mano.shape_blend(hand.v_template, hand.shapedirs, betas)
    V = hand.v_template.shape[0]
    answer = _expect_tensor(_call(shape_blend, "shape_blend", hand.v_template.clone(), hand.shapedirs.clone(),
                                  betas.clone()), "shape_blend", (3, V, 3))
    if torch.allclose(answer, expected - hand.v_template, atol=1e-6):
        raise ExerciseError("you returned the offsets B_S(beta) only: add the template v_template")
    if torch.allclose(answer, hand.v_template.expand_as(answer), atol=1e-7):
        raise ExerciseError("every hand is the template: the betas were not used")
    if not torch.allclose(answer, expected, atol=1e-6):
        worst = 1000 * (answer - expected).norm(dim=-1).max().item()
        raise ExerciseError(f"vertices off by up to {worst:.1f} mm: offset of vertex v, coordinate d is "
                            "sum_k betas[b, k] * shapedirs[v, d, k] (e.g. torch.einsum('bk,vdk->bvd', ...))")
    short = betas[:, :4]
    answer = _expect_tensor(_call(shape_blend, "shape_blend (4 betas)", hand.v_template, hand.shapedirs, short),
                            "shape_blend with 4 betas", (3, V, 3))
    if not torch.allclose(answer, mano.shape_blend(hand.v_template, hand.shapedirs, short), atol=1e-6):
        raise ExerciseError("with 10 betas it is right, with 4 it is not: use the first betas.shape[-1] shape "
                            "directions (shapedirs[..., :k])")
    print("shape_blend: correct (the same as handlib.mano.layer.shape_blend, with 10 and with 4 betas)")


def check_kinematic_chain(kinematic_chain) -> None:
    """Chapter 1, exercise 3: the kinematic chain as a loop over the joints.

    ``kinematic_chain(rotations, joints, parents)``: (B, J, 3, 3) local rotations, (B, J, 3) rest
    joints, J parents (-1 for the root, parents first) -> world rotation (B, J, 3, 3) and world
    position (B, J, 3) of each joint: G_k = G_parent(k) [R_k | J_k - J_parent(k)].

    Raises:
        ExerciseError: what differs from ``handlib.mano.layer.kinematic_chain``.
    """
    from handlib.geometry import axis_angle_to_matrix
    from handlib.mano import layer as mano

    hand = _model_tensors()
    parents = [int(p) for p in hand.parents]
    generator = torch.Generator().manual_seed(3)
    rotations = axis_angle_to_matrix(0.6 * torch.randn(2, len(parents), 3, generator=generator))
    betas = torch.randn(2, 10, generator=generator)
    joints = mano.regress_joints(hand.J_regressor, mano.shape_blend(hand.v_template, hand.shapedirs, betas))
    expected_rotation, expected_position = mano.kinematic_chain(rotations, joints, parents)
    answer = _call(kinematic_chain, "kinematic_chain", rotations.clone(), joints.clone(), parents)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ExerciseError("return two tensors: the world rotations (B, J, 3, 3) and the world positions (B, J, 3)")
    rotation = _expect_tensor(answer[0], "kinematic_chain's rotation", tuple(expected_rotation.shape))
    position = _expect_tensor(answer[1], "kinematic_chain's position", tuple(expected_position.shape))
    if not torch.allclose(rotation[:, 0], rotations[:, 0], atol=1e-5) or \
            not torch.allclose(position[:, 0], joints[:, 0], atol=1e-6):
        raise ExerciseError("the root (joint 0) has no parent: its world rotation is its own R_0, its position J_0")
    if not torch.allclose(rotation, expected_rotation, atol=1e-5):
        reversed_order = [rotations[:, 0]]
        for k in range(1, len(parents)):
            reversed_order.append(rotations[:, k] @ reversed_order[parents[k]])
        if torch.allclose(rotation, torch.stack(reversed_order, 1), atol=1e-5):
            raise ExerciseError("the product is in the wrong order: the world rotation of joint k is "
                                "G_parent(k) @ R_k (the parent's frame first), not R_k @ G_parent(k)")
        raise ExerciseError("the world rotations differ: each is the parent's world rotation times the joint's own")
    unrotated = [joints[:, 0]]
    for k in range(1, len(parents)):
        unrotated.append(unrotated[parents[k]] + joints[:, k] - joints[:, parents[k]])
    if torch.allclose(position, torch.stack(unrotated, 1), atol=1e-5):
        raise ExerciseError("the bones are not turned: the offset J_k - J_parent(k) must be rotated by the "
                            "parent's world rotation before it is added to the parent's position")
    absolute = [joints[:, 0]]
    for k in range(1, len(parents)):
        absolute.append(absolute[parents[k]] + (expected_rotation[:, parents[k]] @ joints[:, k, :, None])[..., 0])
    if torch.allclose(position, torch.stack(absolute, 1), atol=1e-5):
        raise ExerciseError("you rotated the rest position J_k itself; rotate the bone, J_k - J_parent(k)")
    if not torch.allclose(position, expected_position, atol=1e-5):
        worst = 1000 * (position - expected_position).norm(dim=-1).max().item()
        raise ExerciseError(f"the world positions are off by up to {worst:.1f} mm: position_k = position_parent + "
                            "rotation_parent @ (J_k - J_parent)")
    print("kinematic_chain: correct (the same as handlib.mano.layer.kinematic_chain, two random poses)")


def check_hand_lengths(hand_lengths) -> None:
    """Chapter 1, exercise 2 (an experiment): ``hand_lengths()`` returns the wrist-to-middle-fingertip
    length (keypoints 0 and 12) of 1000 hands with beta ~ N(0, I), in millimetres, shape (1000,).

    Compares the spread (2.5th, 50th, 97.5th percentiles) with the course's own draw, and prints it
    beside the adult range, 170 to 220 mm.

    Raises:
        ExerciseError: lengths in the wrong unit, of one hand, or a spread unlike the model's.
    """
    lengths_mm = torch.as_tensor(_call(hand_lengths, "hand_lengths")).detach().float().flatten()
    if lengths_mm.numel() != 1000:
        raise ExerciseError(f"expected 1000 lengths, one per hand, got {lengths_mm.numel()}")
    if lengths_mm.median() < 1:
        raise ExerciseError("these look like metres: multiply by 1000 for millimetres")
    hand = _model_tensors()
    betas = torch.randn(1000, 10, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        joints = hand(betas=betas).joints
    reference = 1000 * (joints[:, 12] - joints[:, 0]).norm(dim=-1)
    q = torch.tensor([0.025, 0.5, 0.975])
    theirs, ours = torch.quantile(lengths_mm, q), torch.quantile(reference, q)
    if (theirs[2] - theirs[0]) < 0.2 * (ours[2] - ours[0]):
        raise ExerciseError(f"the lengths hardly vary ({theirs[0]:.0f} to {theirs[2]:.0f} mm): draw a new beta "
                            "for every hand, betas = torch.randn(1000, 10)")
    if (theirs[2] - theirs[0]) > 2.5 * (ours[2] - ours[0]):
        raise ExerciseError("the spread is much wider than the model's: beta ~ N(0, I), not a larger scale")
    if (theirs - ours).abs().max() > 6:
        raise ExerciseError(f"your percentiles {theirs.numpy().round(0)} mm differ from the model's "
                            f"{ours.numpy().round(0)} mm: measure from keypoint 0 (wrist) to 12 (middle tip) "
                            "of hand(betas=betas).joints")
    print(f"hand lengths: correct; 95 % of the model's hands measure {theirs[0]:.0f} to {theirs[2]:.0f} mm "
          f"(median {theirs[1]:.0f}); adults: about 170 to 220 mm")


# --------------------------------------------------------------------------------------------
# Chapter 2: a first try (Zimmermann & Brox 2017)
# --------------------------------------------------------------------------------------------

def _hands(seed: int = 0) -> torch.Tensor:
    """(4, 21, 3) metres: four hands of the synthetic engine's pose prior, turned and placed at random."""
    from handlib.geometry import axis_angle_to_matrix
    from handlib.mano.prior import sample_poses

    hand = _model_tensors()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        joints = hand(hand_pose=sample_poses(4, generator=seed), betas=torch.randn(4, 10, generator=generator)).joints
    turn = axis_angle_to_matrix(2.0 * torch.randn(4, 3, generator=generator))
    placed = torch.tensor([0.0, 0.0, 0.5]) + 0.05 * torch.randn(4, 1, 3, generator=generator)
    return joints @ turn.transpose(1, 2) + placed


def check_canonical(canonical) -> None:
    """Chapter 2, exercise 2: the canonical frame.

    ``canonical(keypoints_3d)``: (B, 21, 3) metres, right hands -> (B, 21, 3): root-relative, divided
    by the middle MCP-PIP bone (9-10), rotated so that keypoint 9 lies on +y and keypoint 17 in the xy
    plane with x > 0 (R's rows x, y, z = x cross y).

    Raises:
        ExerciseError: what differs from ``handlib.models.zimmermann2017.canonical_frame``.
    """
    from handlib.models.zimmermann2017 import canonical_frame

    hands = _hands()
    frame = canonical_frame(hands)
    expected = frame.canonical
    answer = _expect_tensor(_call(canonical, "canonical", hands.clone()), "canonical", tuple(hands.shape))
    if answer[:, 0].abs().max() > 1e-4:
        raise ExerciseError("the wrist (keypoint 0) should be at the origin: subtract it first")
    if torch.allclose(answer, expected * frame.scale[:, None, None], atol=1e-4):
        raise ExerciseError("right shape, wrong size: divide by s, the length of the middle MCP-PIP bone "
                            "(keypoints 9 and 10)")
    mirrored = expected * torch.tensor([1.0, 1.0, -1.0])
    if torch.allclose(answer, mirrored, atol=1e-4):
        raise ExerciseError("z has the wrong sign: R's third row is z = x cross y (torch.cross(x, y)); "
                            "y cross x gives a mirror (det R = -1), not a rotation")
    if answer[:, 9, [0, 2]].abs().max() > 1e-3:
        raise ExerciseError("the middle MCP (9) should lie on the +y axis (x = z = 0): y = w_rel[9] / |w_rel[9]|, "
                            "and the result is R @ w_rel with R's rows x, y, z")
    if answer[:, 17, 2].abs().max() > 1e-3 or (answer[:, 17, 0] <= 0).any():
        raise ExerciseError("the pinky MCP (17) should lie in the xy plane with x > 0: x is w_rel[17] minus its "
                            "component along y (Gram-Schmidt), normalised")
    if not torch.allclose(answer, expected, atol=1e-4):
        worst = (answer - expected).norm(dim=-1).max().item()
        raise ExerciseError(f"off by up to {worst:.3f} bone units; check the scale bone (9-10) and the order of "
                            "the axes")
    print("canonical: correct (the same as handlib.models.zimmermann2017.canonical_frame)")


def _errors(seed: int = 0):
    """(30, 5) errors in mm with NaN for hidden keypoints (more in some columns, one column all NaN),
    some exactly on a threshold; and the thresholds (11,)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    errors = rng.uniform(0, 50, (30, 5)).round(0)              # whole millimetres: many exactly on a threshold
    errors[rng.random((30, 5)) < np.array([0.0, 0.1, 0.5, 0.8, 0.0])] = np.nan
    errors[:, 4] = np.nan                                      # a keypoint never visible
    return errors, np.linspace(0, 50, 11)


def check_pck(pck) -> None:
    """Chapter 2, exercise 3: PCK from errors.

    ``pck(errors, thresholds)``: errors (N, K) numpy, NaN where a keypoint is hidden; thresholds (T,)
    -> (T,): for each threshold t, the fraction of each keypoint's *valid* errors that are <= t,
    averaged over the keypoints that have any valid error.

    Raises:
        ExerciseError: what differs from ``handlib.metrics.pck_curve``.
    """
    import numpy as np

    from handlib.metrics import pck_curve

    errors, thresholds = _errors()
    expected = pck_curve(errors, thresholds)
    answer = _call(pck, "pck", errors.copy(), thresholds.copy())
    answer = np.asarray(answer.detach().cpu() if torch.is_tensor(answer) else answer, dtype=np.float64)
    if answer.shape != thresholds.shape:
        raise ExerciseError(f"pck should return one value per threshold, shape {thresholds.shape}, got {answer.shape}")
    if np.isnan(answer).any():
        raise ExerciseError("NaN in the curve: the last keypoint is never visible; leave it out of the mean "
                            "(it has no error to count), and ignore NaN entries elsewhere")
    valid = ~np.isnan(errors)
    with np.errstate(invalid="ignore"):
        counted_as_wrong = ((errors[None] <= thresholds[:, None, None]) & valid[None]).mean(axis=(1, 2))
        pooled = ((errors[None] <= thresholds[:, None, None]) & valid[None]).sum(axis=(1, 2)) / valid.sum()
        strict = pck_curve(np.where(valid, errors + 1e-9, np.nan), thresholds)
        keypoint_zero = (((errors[None] <= thresholds[:, None, None]) & valid[None]).sum(1)
                         / np.maximum(valid.sum(0), 1)).mean(1)
    if np.allclose(answer, counted_as_wrong, atol=1e-6):
        raise ExerciseError("hidden keypoints (NaN) were counted as wrong: divide by the number of valid errors "
                            "of each keypoint, not by N")
    if np.allclose(answer, keypoint_zero, atol=1e-6):
        raise ExerciseError("the never-visible keypoint entered the mean as 0: average only over the keypoints "
                            "that have a valid error")
    if np.allclose(answer, strict, atol=1e-6) and not np.allclose(answer, expected, atol=1e-6):
        raise ExerciseError("an error equal to the threshold counts as correct: use <=, not <")
    if np.allclose(answer, pooled, atol=1e-6):
        raise ExerciseError("you pooled all valid errors together; PCK takes each keypoint's fraction first, then "
                            "the mean over keypoints (a keypoint hidden in most images weighs as much as the others)")
    if not np.allclose(answer, expected, atol=1e-6):
        worst = np.abs(answer - expected).max()
        raise ExerciseError(f"off by up to {worst:.3f} from pck_curve: for each keypoint, the fraction of its "
                            "valid errors <= t; then the mean over keypoints with any valid error")
    print("pck: correct (the same as handlib.metrics.pck_curve, hidden keypoints and ties included)")


def check_readout_error(readout_error) -> None:
    """Chapter 2, exercise 1 (an experiment): ``readout_error()`` returns the mean distance, in pixels
    of a 128 px image, between 1000 random keypoints (uniform in [8, 120) px, ``torch.rand`` with
    seed 0) and their argmax read-out (``heatmap_argmax``) from their own 32 x 32 target maps
    (``zb.score_map_targets``).

    Raises:
        ExerciseError: a value far from the read-out error of this grid.
    """
    from handlib.data.heatmaps import heatmap_argmax
    from handlib.models import zimmermann2017 as zb

    error_px = _call(readout_error, "readout_error")
    if torch.is_tensor(error_px):
        error_px = error_px.item()
    if not isinstance(error_px, (int, float)):
        raise ExerciseError(f"give the mean error as a number of pixels, got {type(error_px).__name__}")
    keypoints = 8 + 112 * torch.rand(1, 1000, 2, generator=torch.Generator().manual_seed(0))
    errors = []
    for chunk in keypoints.split(100, dim=1):
        maps = zb.score_map_targets(chunk, torch.ones(chunk.shape[:2]), 128)
        errors.append((heatmap_argmax(maps, 128) - chunk).norm(dim=-1).flatten())
    expected = torch.cat(errors).mean().item()
    if error_px < 0.25 * expected:
        raise ExerciseError(f"{error_px:.3f} px is too small: did you compare the keypoints with themselves? "
                            "read them back from the maps with heatmap_argmax(maps, 128)")
    if abs(error_px - expected / 4) < 0.1 * expected:
        raise ExerciseError("that is in score-map cells, not image pixels: one cell is 128 / 32 = 4 px")
    if abs(error_px - expected) > 0.1 * expected:
        raise ExerciseError(f"{error_px:.2f} px is far from what this grid gives; average |argmax - keypoint| over "
                            "all 1000 keypoints, in image pixels")
    print(f"read-out error: correct, {expected:.2f} px on average: a point uniform in a 4 x 4 px cell lies "
          "about 0.38 cell sides from its centre")

# --------------------------------------------------------------------------------------------
# Chapter 3: weak supervision with depth
# --------------------------------------------------------------------------------------------

def _depth_maps(seed: int = 0) -> torch.Tensor:
    """(3, 16, 16) metres: two 'hands' (a tilted patch with holes, an odd number of readings) and one
    map with no reading."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    maps = torch.zeros(3, 16, 16)
    for i in range(2):
        inside = ((xs - 8 - 2 * i) ** 2 / 30 + (ys - 7) ** 2 / 20) < 1
        surface = 0.45 + 0.1 * i + 0.004 * xs - 0.002 * ys + 0.003 * torch.rand(16, 16, generator=generator)
        holes = torch.rand(16, 16, generator=generator) < 0.15
        reads = inside & ~holes
        if reads.sum() % 2 == 0:                 # an odd count: one median, whichever convention computes it
            reads[tuple(reads.nonzero()[0])] = False
        maps[i] = torch.where(reads, surface, torch.zeros(()))
    return maps


def check_relative_depth(relative_depth) -> None:
    """Chapter 3, exercise 1: a depth map relative to the hand.

    ``relative_depth(depth)``: depth (B, H, W) metres, 0 where the sensor read nothing -> (B, H, W)
    the depth minus the median depth of that map's readings, divided by ``cai2018.DEPTH_UNIT``;
    0 where there is no reading, and everywhere in a map with no reading at all.

    Raises:
        ExerciseError: what differs from ``cai2018.depth_targets`` at full resolution.
    """
    from handlib.models.cai2018 import DEPTH_UNIT, depth_targets

    depth = _depth_maps()
    expected, _ = depth_targets(depth, depth.shape[-1], min_coverage=1.0)
    answer = _expect_tensor(_call(relative_depth, "relative_depth", depth.clone()), "relative_depth",
                            tuple(depth.shape))
    if answer[2].abs().max() > 1e-6:
        raise ExerciseError("the third map has no reading at all: its relative depth should be 0 everywhere")
    off_hand = depth == 0
    if answer[off_hand].abs().max() > 1e-6:
        raise ExerciseError("where the sensor read nothing (depth 0) the answer should be 0; mask those pixels")
    if torch.allclose(answer, expected * DEPTH_UNIT, atol=1e-5):
        raise ExerciseError("the values are in metres: divide by DEPTH_UNIT (the mean scale bone, 42.9 mm)")
    reads = depth > 0
    mean_based = torch.where(reads, (depth - (depth * reads).sum((1, 2), keepdim=True)
                                     / reads.sum((1, 2), keepdim=True).clamp_min(1)) / DEPTH_UNIT, torch.zeros(()))
    if torch.allclose(answer, mean_based, atol=1e-4):
        raise ExerciseError("you subtracted the mean depth; use the median of the readings, which a few "
                            "wild readings at the edges do not move")
    if not torch.allclose(answer, expected, atol=1e-4):
        worst = (answer - expected).abs().max().item()
        raise ExerciseError(f"the relative depth is off by up to {worst:.3f} DEPTH_UNITs; the median should "
                            "be taken over the pixels with a reading (depth > 0) of each map on its own")
    print("relative_depth: correct (the same as handlib.models.cai2018.depth_targets at full resolution)")


def check_depth_l1(depth_l1) -> None:
    """Chapter 3, exercise 2: L_dep for one batch.

    ``depth_l1(rendered, target, known)``: three (B, d, d) tensors -> (B,) the mean of
    |rendered - target| over each sample's known cells (``known`` 1 where the depth is known,
    0 elsewhere); 0 for a sample with no known cell.

    Raises:
        ExerciseError: what differs from ``cai2018.depth_loss``.
    """
    from handlib.models.cai2018 import depth_loss

    generator = torch.Generator().manual_seed(1)
    rendered, target = torch.randn(4, 8, 8, generator=generator), torch.randn(4, 8, 8, generator=generator)
    known = (torch.rand(4, 8, 8, generator=generator) < 0.4).float()
    known[3] = 0                                                                     # a sample with no depth at all
    answer = _expect_tensor(_call(depth_l1, "depth_l1", rendered, target, known), "depth_l1", (4,))
    expected = torch.stack([depth_loss(rendered[i:i + 1], target[i:i + 1], known[i:i + 1], torch.ones(1))
                            for i in range(4)])
    everywhere = (rendered - target).abs().mean((1, 2))
    if torch.allclose(answer[:3], everywhere[:3], atol=1e-5):
        raise ExerciseError("you averaged over every cell; L_dep counts only the known ones (the hand's): "
                            "multiply by `known` and divide by the number of known cells")
    squared = ((rendered - target) ** 2 * known).sum((1, 2)) / known.sum((1, 2)).clamp_min(1)
    if torch.allclose(answer[:3], squared[:3], atol=1e-5):
        raise ExerciseError("that is a squared error; L_dep is an L1 distance, |rendered - target|")
    if answer[3].abs() > 1e-6:
        raise ExerciseError("the last sample has no known cell: its loss should be 0 (not NaN), so that it "
                            "pulls on nothing; divide by the count clamped to at least 1")
    if not torch.allclose(answer, expected, atol=1e-5):
        raise ExerciseError(f"expected {expected.numpy().round(4)}, got {answer.detach().numpy().round(4)}: the "
                            "mean of |rendered - target| over the cells where known is 1, for each sample")
    print("depth_l1: correct (the same as handlib.models.cai2018.depth_loss, sample by sample)")


def check_g_floor(g_floor) -> None:
    """Chapter 3, exercise 3 (an experiment): the floor of L_dep.

    ``g_floor()`` -> float: the mean over the first 32 images of the fixed synthetic test set of
    G(true joints)'s L1 error against the sensor's depth (``cai2018.depth_views`` with a generator
    seeded 0, the mean over each image's known cells, then over the images), with the shipped model.

    Raises:
        ExerciseError: the number differs from the course's measurement of it.
    """
    from torch.utils.data import default_collate

    from handlib.checkpoints import load_model
    from handlib.models import cai2018 as cai

    answer = _call(g_floor, "g_floor")
    if torch.is_tensor(answer) and answer.numel() == 1:
        answer = answer.item()
    if not isinstance(answer, (int, float)):
        raise ExerciseError(f"g_floor should return one number (a float), got {type(answer).__name__}")
    _, model, config = load_model("cai2018")
    test_set = cai.METHOD.test_data(config, 32)
    batch = default_collate([test_set[i] for i in range(32)])
    views = cai.depth_views(model, batch, torch.Generator().manual_seed(0))
    every = torch.ones(32)
    expected = cai.depth_loss(views["true_joints"], views["sensor"], views["known"], every).item()
    predicted = cai.depth_loss(views["predicted_joints"], views["sensor"], views["known"], every).item()
    if abs(answer - predicted) < 1e-3:
        raise ExerciseError(f"{answer:.3f} is G of the *predicted* joints; the floor is G of the true ones "
                            "(views['true_joints'])")
    if abs(answer - expected) > 2e-3:
        raise ExerciseError(f"got {answer:.4f}; average |G(J) - D| over each image's known cells "
                            "(views['known']), then over the 32 images, with torch.Generator().manual_seed(0)")
    print(f"g_floor: correct ({expected:.3f} DEPTH_UNITs, {1000 * expected * cai.DEPTH_UNIT:.1f} mm; "
          f"G of the predicted joints: {predicted:.3f})")

# --------------------------------------------------------------------------------------------
# Chapter 4: MANO regression from the image (Boukhayma et al. 2019)
# --------------------------------------------------------------------------------------------

def check_weak_perspective(project) -> None:
    """Chapter 4, exercise 1: the weak-perspective camera.

    ``project(points, camera)``: points (B, N, 3) metres, camera (B, 3) [s, t_x, t_y] -> (B, N, 2)
    pixels, x_2D = s X_xy + t, each sample with its own camera.

    Raises:
        ExerciseError: what differs from ``boukhayma2019.project_weak_perspective``.
    """
    from handlib.models.boukhayma2019 import project_weak_perspective

    generator = torch.Generator().manual_seed(4)
    points = 0.05 * torch.randn(3, 5, 3, generator=generator) + torch.tensor([0.0, 0.0, 0.5])
    camera = torch.tensor([[700.0, 64.0, 60.0], [500.0, 30.0, 90.0], [900.0, 70.0, 64.0]])
    answer = _expect_tensor(_call(project, "project", points.clone(), camera.clone()), "project", (3, 5, 2))
    expected = project_weak_perspective(points, camera)
    if torch.allclose(answer, camera[:, None, :1] * points[..., :2], atol=1e-3):
        raise ExerciseError("the translation is missing: add t = camera[:, 1:] (t_x to u, t_y to v)")
    if torch.allclose(answer, camera[:, None, :1] * points[..., :2] / points[..., 2:] + camera[:, None, 1:], atol=1e-3):
        raise ExerciseError("you divided by the depth: that is the pinhole camera; the weak perspective drops "
                            "the depth and scales every point by the same s")
    if torch.allclose(answer, camera[:1, None, :1] * points[..., :2] + camera[:1, None, 1:], atol=1e-3):
        raise ExerciseError("every sample used the first camera: index the camera per sample, camera[:, None, ...]")
    if not torch.allclose(answer, expected, atol=1e-3):
        raise ExerciseError(f"off by up to {(answer - expected).abs().max():.2f} px: x_2D = s * X[..., :2] + t, "
                            "with s = camera[:, 0] and t = camera[:, 1:] of each sample")
    print("project: correct (the same as handlib.models.boukhayma2019.project_weak_perspective)")


def check_fraction_outside(fraction_outside) -> None:
    """Chapter 4, exercise 2: L_mask, the fraction of projected vertices outside the hand mask.

    ``fraction_outside(vertices_2d, mask)``: (B, V, 2) pixels and (B, H, W) 0/1 -> (B,) the fraction
    of each sample's vertices on a 0 of the mask or outside the image (pixel (i, j) covers
    [i, i + 1) x [j, j + 1), column i is u, row j is v).

    Raises:
        ExerciseError: what differs from ``boukhayma2019.vertex_mask_loss`` (which samples the mask
        bilinearly; on pixel centres, as here, the two agree).
    """
    from handlib.models.boukhayma2019 import vertex_mask_loss

    generator = torch.Generator().manual_seed(5)
    mask = torch.zeros(2, 12, 16)
    mask[0, 2:9, 3:8] = 1                                            # a tall box: rows 2-8, columns 3-7
    mask[1, 6:, :] = 1                                               # the lower half
    cells = torch.stack([torch.randint(-3, 19, (2, 40), generator=generator),
                         torch.randint(-3, 15, (2, 40), generator=generator)], dim=-1).float()
    vertices_2d = cells + 0.5                                        # pixel centres, some off the image
    answer = _expect_tensor(_call(fraction_outside, "fraction_outside", vertices_2d.clone(), mask.clone()),
                            "fraction_outside", (2,))
    expected = torch.stack([vertex_mask_loss(vertices_2d[i:i + 1], mask[i:i + 1], torch.ones(1)) for i in range(2)])
    column, row = cells[..., 0].long(), cells[..., 1].long()
    in_image = (column >= 0) & (column < 16) & (row >= 0) & (row < 12)
    swapped = mask[torch.arange(2)[:, None], column.clamp(0, 11), row.clamp(0, 15)] > 0.5     # mask[b, u, v]
    swapped_answers = (1 - swapped.float().mean(1), 1 - (swapped & in_image).float().mean(1))
    if torch.allclose(answer, 1 - expected, atol=1e-5):
        raise ExerciseError("that is the fraction *inside* the mask: L_mask counts the vertices outside")
    if any(torch.allclose(answer, wrong, atol=1e-5) for wrong in swapped_answers):
        raise ExerciseError("rows and columns are swapped: the mask is indexed mask[b, row, column] = "
                            "mask[b, v, u]")
    if not torch.allclose(answer, expected, atol=1e-5):
        raise ExerciseError(f"expected {expected.numpy().round(3)}, got {answer.detach().numpy().round(3)}; "
                            "a vertex outside the image counts as outside the mask (clamp the index, then "
                            "mask the result)")
    print("fraction_outside: correct (the same as handlib.models.boukhayma2019.vertex_mask_loss)")


# --------------------------------------------------------------------------------------------
# Chapter 5: DetNet + IKNet (Zhou et al. 2020)
# --------------------------------------------------------------------------------------------

def check_location_readout(read_locations) -> None:
    """Chapter 5, exercise 1: DetNet's readout, X_j = L_j at the peak of H_j.

    ``read_locations(heatmaps, location_maps)``: (B, 21, s, s) and (B, 21, 3, s, s) -> (B, 21, 3),
    each keypoint's three location-map values at the cell where its own heatmap peaks.

    Raises:
        ExerciseError: what differs from ``zhou2020.read_location_maps``.
    """
    from handlib.models.zhou2020 import read_location_maps

    generator = torch.Generator().manual_seed(6)
    heatmaps = torch.rand(2, 21, 6, 8, generator=generator)            # not square: rows and columns differ
    location_maps = torch.randn(2, 21, 3, 6, 8, generator=generator)
    answer = _expect_tensor(_call(read_locations, "read_locations", heatmaps.clone(), location_maps.clone()),
                            "read_locations", (2, 21, 3))
    expected = read_location_maps(heatmaps, location_maps)
    peak_of_first = heatmaps[:, :1].flatten(2).argmax(-1)                                     # (B, 1)
    first = location_maps.flatten(3).gather(3, peak_of_first[:, None, None].expand(2, 21, 3, 1))[..., 0]
    if torch.allclose(answer, first, atol=1e-6):
        raise ExerciseError("every keypoint was read at the wrist's peak: take the argmax of each keypoint's "
                            "own heatmap H_j")
    if torch.allclose(answer, location_maps.mean((-2, -1)), atol=1e-6):
        raise ExerciseError("that is the maps' mean over all cells: read them at one cell, the heatmap's peak")
    if not torch.allclose(answer, expected, atol=1e-6):
        wrong = int((~torch.isclose(answer, expected, atol=1e-6).all(-1)).sum())
        raise ExerciseError(f"{wrong} of 42 keypoints were read at the wrong cell; flatten H_j's s x s cells, "
                            "take the argmax, and read L_j's three channels at that same flat index "
                            "(row = index // width, column = index % width)")
    print("read_locations: correct (the same as handlib.models.zhou2020.read_location_maps)")


def check_local_rotations(local_rotations) -> None:
    """Chapter 5, exercise 3: from global (world) joint rotations to MANO's local ones.

    ``local_rotations(world, parents)``: world (B, 16, 3, 3) the global rotation of every MANO joint,
    parents a list of 16 ints (-1 for the root) -> (B, 16, 3, 3): R_0 = G_0 and R_k = G_parent(k)^T G_k.

    Raises:
        ExerciseError: what differs, and whether the product is in the wrong order.
    """
    from handlib.geometry import axis_angle_to_matrix
    from handlib.skeleton import MANO_PARENTS

    generator = torch.Generator().manual_seed(7)
    world = axis_angle_to_matrix(0.8 * torch.randn(2, 16, 3, generator=generator))
    parents = [max(p, 0) for p in MANO_PARENTS]
    expected = torch.cat([world[:, :1], (world[:, parents].transpose(-1, -2) @ world)[:, 1:]], 1)
    answer = _expect_tensor(_call(local_rotations, "local_rotations", world.clone(), list(MANO_PARENTS)),
                            "local_rotations", (2, 16, 3, 3))
    if torch.allclose(answer[:, 1:], (world @ world[:, parents].transpose(-1, -2))[:, 1:], atol=1e-5):
        raise ExerciseError("the product is in the wrong order: G_k = G_parent R_k, so R_k = G_parent^T G_k "
                            "(the parent's inverse on the left)")
    if torch.allclose(answer[:, 1:], (world[:, parents] @ world)[:, 1:], atol=1e-5):
        raise ExerciseError("a rotation's inverse is its transpose: use G_parent^T, not G_parent")
    if not torch.allclose(answer[:, :1], world[:, :1], atol=1e-5):
        raise ExerciseError("the root (wrist, parent -1) has no parent: its local rotation is its global one")
    if not torch.allclose(answer, expected, atol=1e-5):
        raise ExerciseError(f"off by up to {(answer - expected).abs().max():.3f}: R_k = G[parents[k]]^T G[k] "
                            "for every k >= 1")
    print("local_rotations: correct (as handlib.models.zhou2020.local_pose_from_bone_rotations does it)")


def check_bone_ratios(bone_ratios) -> None:
    """Chapter 5, exercise 2: the data of the shape fit, each bone's length over the reference bone's.

    ``bone_ratios(keypoints)``: (B, 21, 3) course order -> (B, 20), the length of every bone of
    ``skeleton.BONES`` (in that order) divided by the same hand's wrist-to-middle-MCP length (W -> M0).

    Raises:
        ExerciseError: what differs from ``zhou2020.bone_ratios_of``.
    """
    from handlib.models.zhou2020 import bone_ratios_of
    from handlib.skeleton import BONES, MIDDLE_MCP, SCALE_BONE, WRIST

    generator = torch.Generator().manual_seed(8)
    keypoints = torch.randn(3, 21, 3, generator=generator) * torch.tensor([[[0.04]], [[0.05]], [[0.09]]])
    answer = _call(bone_ratios, "bone_ratios", keypoints.clone())
    if torch.is_tensor(answer) and tuple(answer.shape) == (3, 21):
        raise ExerciseError("21 values per hand: the wrist has no bone ending at it; give the 20 bones of "
                            "skeleton.BONES, in that order")
    answer = _expect_tensor(answer, "bone_ratios", (3, 20))
    expected = bone_ratios_of(keypoints)
    lengths = torch.stack([(keypoints[:, c] - keypoints[:, p]).norm(dim=-1) for p, c in BONES], 1)   # (B, 20)
    if torch.allclose(answer, lengths, atol=1e-5):
        raise ExerciseError("those are the bone lengths themselves: divide each hand's by its W -> M0 length, "
                            "so that the hand's size drops out and only its proportions are left")
    scale_bone = (keypoints[:, SCALE_BONE[1]] - keypoints[:, SCALE_BONE[0]]).norm(dim=-1, keepdim=True)
    if torch.allclose(answer, lengths / scale_bone, atol=1e-5):
        raise ExerciseError("you divided by the middle finger's MCP-PIP bone (the course's scale bone); Zhou et "
                            "al.'s reference bone is the wrist to the middle MCP (keypoints 0 and 9)")
    reference = (keypoints[:, WRIST] - keypoints[:, MIDDLE_MCP]).norm(dim=-1, keepdim=True)
    if torch.allclose(answer, lengths / reference[:1], atol=1e-5):
        raise ExerciseError("every hand was divided by the first hand's reference bone: each hand by its own")
    if not torch.allclose(answer, expected, atol=1e-5):
        raise ExerciseError(f"off by up to {(answer - expected).abs().max():.3f}: |x_c - x_p| / |x_W - x_M0| for "
                            "each (p, c) of skeleton.BONES")
    print("bone_ratios: correct (the same as handlib.models.zhou2020.bone_ratios_of; the reference bone's own "
          "ratio is 1)")


# --------------------------------------------------------------------------------------------
# Chapter 6: a graph CNN on the hand mesh (Ge et al. 2019)
# --------------------------------------------------------------------------------------------

def _hand_graphs() -> list[tuple[str, torch.Tensor]]:
    """(name, adjacency) of two graphs: the hand mesh's (778 vertices, 0/1 weights) and its second
    coarsening level's (``graph.coarsen``, weighted edges: the summed fine edges between clusters)."""
    from handlib.models import graph
    from handlib.models.ge2019 import NUM_VERTICES, hand_layer

    hierarchy = graph.coarsen(hand_layer().faces, NUM_VERTICES, 2, seed=0)
    return [("the hand mesh", hierarchy[0].adjacency),
            (f"the second coarsening level ({hierarchy[2].num_vertices} vertices, weighted edges)",
             hierarchy[2].adjacency)]


def check_rescaled_laplacian(rescaled_laplacian) -> None:
    """Chapter 6, exercise 1: the rescaled Laplacian of a graph.

    ``rescaled_laplacian(adjacency)``: (V, V) symmetric non-negative edge weights -> (V, V)
    L~ = 2 L / lambda_max - I, with L = I - D^{-1/2} A D^{-1/2} (D the summed weights) and lambda_max
    L's largest eigenvalue: L~'s spectrum is [-1, 1].

    Raises:
        ExerciseError: what differs from ``graph.rescaled_laplacian(graph.normalized_laplacian(A))``,
        naming the usual mistakes (Ge et al.'s released code's L / (2 lambda_max) - I among them).
    """
    from handlib.models import graph

    for name, adjacency in _hand_graphs():
        size = len(adjacency)
        answer = _expect_tensor(_call(rescaled_laplacian, "rescaled_laplacian", adjacency.clone()),
                                "rescaled_laplacian", (size, size)).double()
        laplacian = graph.normalized_laplacian(adjacency.double())
        largest = float(torch.linalg.eigvalsh(laplacian)[-1])
        expected = graph.rescaled_laplacian(laplacian, largest)
        eye = torch.eye(size, dtype=torch.float64)
        if not torch.allclose(answer, answer.T, atol=1e-5):
            raise ExerciseError(f"on {name} your matrix is not symmetric: normalise on both sides, D^-1/2 A D^-1/2 "
                                "(entry i, j is A_ij / sqrt(d_i d_j)); D^-1 A is the random-walk normalisation")
        binary = graph.normalized_laplacian((adjacency > 0).double())
        unnormalised = torch.diag(adjacency.double().sum(1)) - adjacency.double()
        mistakes = [
            (laplacian / (2 * largest) - eye, "you computed L / (2 lambda_max) - I, what Ge et al.'s released code "
             "computes (its comment says 2 L / lambda_max - I): its spectrum is [-1, -0.5], not [-1, 1]"),
            (laplacian / largest - eye, "the factor 2 is missing: L / lambda_max - I has its spectrum in [-1, 0]"),
            (2 * laplacian / largest, "the - I is missing: 2 L / lambda_max has its spectrum in [0, 2]; subtract the "
             "identity to centre it on 0"),
            (laplacian - eye, "you used lambda_max = 2, the bound that holds for every graph, instead of this "
             f"graph's largest eigenvalue ({largest:.4f} on {name}): take torch.linalg.eigvalsh(L)[-1]"),
            (2 * laplacian - eye, "you used lambda_max = 1: take L's largest eigenvalue, torch.linalg.eigvalsh(L)[-1] "
             "(eigvalsh sorts them in ascending order)"),
            (2 * unnormalised / float(torch.linalg.eigvalsh(unnormalised)[-1]) - eye,
             "that is the rescaled combinatorial Laplacian D - A; normalise it: L = I - D^-1/2 A D^-1/2"),
        ]
        if not torch.allclose(binary, laplacian):
            mistakes.append((2 * binary / float(torch.linalg.eigvalsh(binary)[-1]) - eye,
                             f"on {name} the edges have weights: the degree d_i is the sum of row i's weights, and "
                             "A itself enters with its weights, not as 0/1"))
        for wrong, message in mistakes:
            if torch.allclose(answer, wrong, atol=1e-4):
                raise ExerciseError(message)
        if not torch.allclose(answer, expected, atol=1e-4):
            spectrum = torch.linalg.eigvalsh(answer)
            raise ExerciseError(f"on {name}: off by up to {(answer - expected).abs().max():.4f}; your matrix's "
                                f"eigenvalues run from {spectrum[0]:.3f} to {spectrum[-1]:.3f}, L~'s from -1 to 1. "
                                "L = I - D^-1/2 A D^-1/2, then 2 L / lambda_max - I")
    print("rescaled_laplacian: correct (the same as handlib.models.graph.rescaled_laplacian of normalized_laplacian, "
          "on the mesh and on a weighted coarse graph: spectrum [-1, 1])")


def check_chebyshev_terms(chebyshev_terms) -> None:
    """Chapter 6, exercise 2: the Chebyshev recursion.

    ``chebyshev_terms(laplacian, x, order)``: L~ (V, V), x (B, V, F), K = order -> (K, B, V, F), the
    terms x_0 = x, x_1 = L~ x, x_k = 2 L~ x_{k-1} - x_{k-2}.

    Raises:
        ExerciseError: what differs from ``graph.chebyshev_basis``, naming the usual mistakes.
    """
    from handlib.models import graph

    _, adjacency = _hand_graphs()[0]
    laplacian = graph.rescaled_laplacian(graph.normalized_laplacian(adjacency))                  # (778, 778)
    x = torch.randn(2, len(laplacian), 3, generator=torch.Generator().manual_seed(6))
    answer = _call(chebyshev_terms, "chebyshev_terms", laplacian.clone(), x.clone(), 4)
    if torch.is_tensor(answer) and answer.ndim == 4 and answer.shape[1:] == x.shape and answer.shape[0] != 4:
        raise ExerciseError(f"order = 4 means 4 terms, x_0 to x_3; got {answer.shape[0]}")
    answer = _expect_tensor(answer, "chebyshev_terms", (4, *x.shape))
    expected = graph.chebyshev_basis(laplacian, x, 4)
    powers = torch.stack([x, laplacian @ x, laplacian @ laplacian @ x, laplacian @ laplacian @ laplacian @ x])
    if torch.allclose(answer, powers, atol=1e-4):
        raise ExerciseError("those are the powers L~^k x; the Chebyshev terms follow x_k = 2 L~ x_{k-1} - x_{k-2} "
                            "(same span, but bounded by |x| on [-1, 1], which the powers' mix of signs is not)")
    doubled = [x, laplacian @ x]
    for _ in range(2):
        doubled.append(2 * laplacian @ doubled[-1])
    if torch.allclose(answer, torch.stack(doubled), atol=1e-4):
        raise ExerciseError("the - x_{k-2} is missing: x_k = 2 L~ x_{k-1} - x_{k-2}")
    early = [x, 2 * laplacian @ x]
    for _ in range(2):
        early.append(2 * laplacian @ early[-1] - early[-2])
    if torch.allclose(answer, torch.stack(early), atol=1e-4):
        raise ExerciseError("x_1 is L~ x (T_1(t) = t), without the 2: the recursion starts at k = 2")
    if not torch.allclose(answer, expected, atol=1e-4):
        wrong = [k for k in range(4) if not torch.allclose(answer[k], expected[k], atol=1e-4)]
        raise ExerciseError(f"terms {wrong} differ (off by up to {(answer - expected).abs().max():.4f}); "
                            "x_0 = x, x_1 = L~ x, x_k = 2 L~ x_{k-1} - x_{k-2}")
    for order in (1, 2):
        short = _call(chebyshev_terms, "chebyshev_terms", laplacian.clone(), x.clone(), order)
        if not torch.is_tensor(short) or tuple(short.shape) != (order, *x.shape) or \
                not torch.allclose(short, expected[:order], atol=1e-4):
            got = tuple(short.shape) if torch.is_tensor(short) else type(short).__name__
            raise ExerciseError(f"with order = {order} the answer should be the first {order} term(s), shape "
                                f"{(order, *x.shape)}; got {got}")
    print("chebyshev_terms: correct (the same as handlib.models.graph.chebyshev_basis, orders 1, 2 and 4)")


def check_edge_length_term(edge_length_term) -> None:
    """Chapter 6, exercise 3: the mesh loss's edge-length term.

    ``edge_length_term(predicted, target, edges)``: (B, V, 3) twice and (E, 2) -> (B,) the mean over
    the edges of (|v^_i - v^_j| - |v_i - v_j|)^2.

    Raises:
        ExerciseError: what differs from ``ge2019.edge_length_loss``, naming the usual mistakes.
    """
    from handlib.models import graph
    from handlib.models.ge2019 import LOSS_UNIT, edge_length_loss, hand_layer

    generator = torch.Generator().manual_seed(8)
    layer = hand_layer()
    target = layer(hand_pose=0.3 * torch.randn(2, 45, generator=generator)).vertices / LOSS_UNIT  # (2, 778, 3)
    predicted = target + 0.05 * torch.randn(target.shape, generator=generator)
    edges = graph.mesh_edges(layer.faces)
    answer = _expect_tensor(_call(edge_length_term, "edge_length_term", predicted.clone(), target.clone(), edges),
                            "edge_length_term", (2,))
    expected = edge_length_loss(predicted, target, edges)

    def lengths(v):
        return v[:, edges[:, 0]] - v[:, edges[:, 1]]                                           # (B, E, 3) edge vectors
    mistakes = [
        (((lengths(predicted) - lengths(target)) ** 2).sum(-1).mean(1),
         "you compared the edge *vectors*; compare their lengths, |v^_i - v^_j| - |v_i - v_j|, so that a turned "
         "mesh costs nothing (the vectors' difference is what the normal and Laplacian terms see)"),
        (((lengths(predicted).square().sum(-1) - lengths(target).square().sum(-1)) ** 2).mean(1),
         "you compared squared lengths; take the lengths themselves (.norm(dim=-1)), then square their difference"),
        ((lengths(predicted).norm(dim=-1) - lengths(target).norm(dim=-1)).abs().mean(1),
         "that is the mean absolute difference; L_e squares it"),
        (expected * len(edges), "you summed over the edges; take the mean (the loss should not grow with the mesh's "
         "resolution)"),
    ]
    for wrong, message in mistakes:
        if torch.allclose(answer, wrong, rtol=1e-4, atol=1e-7):
            raise ExerciseError(message)
    if not torch.allclose(answer, expected, rtol=1e-4, atol=1e-7):
        raise ExerciseError(f"expected {expected.numpy().round(5)}, got {answer.detach().numpy().round(5)}: for each "
                            "sample, the mean over the edges (i, j) of (|v^_i - v^_j| - |v_i - v_j|)^2")
    turn = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.5, 0.2], [0.5, 0.0, -0.3], [-0.2, 0.3, 0.0]]))
    turned = _call(edge_length_term, "edge_length_term", target @ turn.T + 1.0, target.clone(), edges)
    if not torch.is_tensor(turned) or turned.abs().max() > 1e-6:
        raise ExerciseError("the true mesh, turned and moved, should cost 0: its edges keep their lengths")
    print("edge_length_term: correct (the same as handlib.models.ge2019.edge_length_loss; 0 for the true mesh "
          "turned and moved)")


# --------------------------------------------------------------------------------------------
# Chapter 7: every method side by side (the benchmark)
# --------------------------------------------------------------------------------------------

def _benchmark_errors(seed: int = 0):
    """(40, 21) 3D errors in mm, spread over 0..80 mm, NaN where a keypoint is hidden (one keypoint
    never visible)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    errors = np.abs(rng.normal(25.0, 15.0, (40, 21))) * rng.uniform(0.5, 1.5, (1, 21))
    errors[rng.random((40, 21)) < 0.15] = np.nan
    errors[:, 20] = np.nan
    return errors


def check_auc_20_50(auc_20_50) -> None:
    """Chapter 7, exercise 1: the AUC of the 3D PCK curve between 20 and 50 mm.

    ``auc_20_50(errors_mm)``: errors (N, K) numpy, millimetres, NaN where a keypoint is hidden ->
    a float in [0, 1]: the area under PCK(t) for t on ``np.linspace(20, 50, 31)`` (trapezoid rule)
    divided by the width of the range, as ``metrics.pck_auc(errors, 20, 50, 31)``.

    Raises:
        ExerciseError: what differs, naming the usual mistakes.
    """
    import numpy as np

    from handlib.metrics import AUC_RANGE_MM, pck_auc, pck_curve

    errors = _benchmark_errors()
    expected = pck_auc(errors, *AUC_RANGE_MM)
    answer = _call(auc_20_50, "auc_20_50", errors.copy())
    if torch.is_tensor(answer):
        answer = answer.item()
    if isinstance(answer, np.ndarray) and answer.size == 1:
        answer = float(answer)
    if not isinstance(answer, (int, float, np.floating)):
        raise ExerciseError(f"auc_20_50 should return one number (a float in [0, 1]), got {type(answer).__name__}")
    answer = float(answer)
    if np.isnan(answer):
        raise ExerciseError("NaN: a keypoint is never visible; compute the PCK with metrics.pck_curve (or your "
                            "chapter 2 pck), which leaves it out, not with a mean over NaN")
    thresholds = np.linspace(20, 50, 31)
    curve = pck_curve(errors, thresholds)
    wide = np.linspace(0, 50, 51)
    mistakes = [
        (float(np.trapezoid(curve, thresholds)), "that is the area in mm (up to 30): divide by the width of the range, "
                                                 "50 - 20 = 30 mm, so that a perfect method scores 1"),
        (pck_auc(errors, 0, 50, 51), "the range is 20 to 50 mm, not 0 to 50 (the STB convention the papers report)"),
        (float(curve.mean()), "you averaged the curve's 31 values; the trapezoid rule gives the two ends half a "
                              "weight (np.trapezoid(pck, thresholds) / 30)"),
        (pck_auc(errors * 1000.0, *AUC_RANGE_MM), "units: the errors are millimetres already; thresholds 20..50 "
                                                  "are millimetres too"),
        (pck_auc(errors / 1000.0, *AUC_RANGE_MM), "units: the errors are millimetres already; thresholds 20..50 "
                                                  "are millimetres too"),
        (float(np.trapezoid(pck_curve(errors, wide), wide) / 50.0), "the range is 20 to 50 mm, not 0 to 50"),
    ]
    for wrong, message in mistakes:
        if abs(answer - wrong) < 1e-9 and abs(wrong - expected) > 1e-9:
            raise ExerciseError(message)
    if not 0.0 <= answer <= 1.0:
        raise ExerciseError(f"{answer:.4f} is not in [0, 1]: the AUC is normalised by the width of the range")
    if abs(answer - expected) > 1e-6:
        raise ExerciseError(f"expected {expected:.4f}, got {answer:.4f}: PCK on np.linspace(20, 50, 31) "
                            "(metrics.pck_curve), then np.trapezoid(pck, thresholds) / (50 - 20)")
    print(f"auc_20_50: correct ({expected:.4f}, the same as handlib.metrics.pck_auc(errors, 20, 50, 31))")


def _procrustes_pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(5, 21, 3) predictions and targets (metres): targets are the predictions turned, scaled, moved
    and noised; the last pair's target is a mirror image (the best orthogonal map is a reflection)."""
    from handlib.geometry import axis_angle_to_matrix

    generator = torch.Generator().manual_seed(seed)
    target = _hands(seed)[:4].double()                                                    # (4, 21, 3)
    target = torch.cat([target, target[:1] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)])   # mirror
    turn = axis_angle_to_matrix(torch.randn(5, 3, generator=generator).double())
    scale = 0.6 + 0.8 * torch.rand(5, 1, 1, generator=generator).double()
    shift = 0.1 * torch.randn(5, 1, 3, generator=generator).double()
    noise = 0.004 * torch.randn(5, 21, 3, generator=generator).double()
    pred = scale * (target + noise) @ turn.transpose(1, 2) + shift
    pred[4] = _hands(seed)[0].double() @ turn[4].T + shift[4]                      # the un-mirrored hand
    return pred, target


def check_procrustes(procrustes_align) -> None:
    """Chapter 7, exercise 2: Procrustes alignment (PA-MPJPE's first step).

    ``procrustes_align(pred, target)``: (N, K, 3) twice -> (N, K, 3): each prediction after the
    similarity transform s R p + t (R a rotation, det R = +1) that brings it closest to its target
    in the least-squares sense, as ``metrics.align_procrustes``.

    Raises:
        ExerciseError: what differs, naming the usual mistakes.
    """
    from handlib.geometry import procrustes
    from handlib.metrics import align_procrustes

    pred, target = _procrustes_pairs()
    expected = align_procrustes(pred, target)
    answer = _call(procrustes_align, "procrustes_align", pred.clone(), target.clone())
    answer = _expect_tensor(answer, "procrustes_align", tuple(pred.shape)).double()

    centred_p, centred_q = pred - pred.mean(1, keepdim=True), target - target.mean(1, keepdim=True)
    u, sigma, vt = torch.linalg.svd(centred_p.transpose(1, 2) @ centred_q)
    reflection = vt.transpose(1, 2) @ u.transpose(1, 2)                                  # may have det -1
    s_reflect = sigma.sum(-1) / centred_p.square().sum((1, 2))
    mirrored = s_reflect[:, None, None] * centred_p @ reflection.transpose(1, 2) + target.mean(1, keepdim=True)
    _, rotation, _ = procrustes(pred, target, scale=True)
    norm_ratio = (centred_q.norm(dim=(1, 2)) / centred_p.norm(dim=(1, 2)))[:, None, None]
    scaled_by_norms = norm_ratio * centred_p @ rotation.transpose(1, 2) + target.mean(1, keepdim=True)
    _, r_rigid, _ = procrustes(pred, target, scale=False)
    rigid = centred_p @ r_rigid.transpose(1, 2) + target.mean(1, keepdim=True)
    mistakes = [
        (rigid, "the scale is missing: with s = 1 the prediction keeps its own size; estimate s = trace(S D) / "
                "|p - p_mean|^2 too (FreiHAND's aligned protocol and PA-MPJPE align the scale)"),
        (mirrored, "one of your R has det(R) = -1: a mirror, not a rotation (the last pair's target is a mirror "
                   "image). Flip the sign of the last singular direction when det(V U^T) < 0 (Kabsch)"),
        (scaled_by_norms, "the scale: s = trace(S D) / |p - p_mean|^2 (S the singular values, D the sign "
                          "correction); the ratio of the point sets' sizes is only right without noise"),
    ]
    for wrong, message in mistakes:
        if torch.allclose(answer, wrong, atol=1e-6) and not torch.allclose(wrong, expected, atol=1e-6):
            raise ExerciseError(message)
    if not torch.allclose(answer.mean(1), target.mean(1), atol=1e-6):
        raise ExerciseError("the aligned prediction's centroid should land on the target's: subtract both "
                            "centroids before the SVD, and set t = q_mean - s R p_mean")
    if not torch.allclose(answer, expected, atol=1e-6):
        worst = (answer - expected).norm(dim=-1).max().item() * 1000.0
        raise ExerciseError(f"off by up to {worst:.2f} mm from metrics.align_procrustes: centre both, SVD of "
                            "p_c^T q_c = U S V^T, R = V D U^T with D = diag(1, 1, sign det(V U^T)), "
                            "s = trace(S D) / |p_c|^2, t = q_mean - s R p_mean")
    print("procrustes_align: correct (the same as handlib.metrics.align_procrustes; the mirrored pair gets a "
          "rotation, not a reflection)")
