"""The exercise convention: every answer in a notebook passes its check, every student stub fails it
with a message that says what to do, and typical wrong answers are named.

Each notebook's exercise cells (an answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``)
run after the notebook's first code cell (its imports and setup), then the check cell that follows.
"""
import json
from pathlib import Path

import pytest
import torch

from handlib import exercises
from handlib.models import cai2018 as cai

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def exercise_cells(notebook: Path) -> list[tuple[str, str, str]]:
    """(setup, answer, check) sources of every exercise of a notebook."""
    code = [exercises.cell_source(c)
            for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    return [(code[0], source, code[i + 1]) for i, source in enumerate(code)
            if exercises.has_solution(source) and i + 1 < len(code)]


EXERCISES = [pytest.param(*cells, id=f"{notebook.stem}-{k}")
             for notebook in NOTEBOOKS for k, cells in enumerate(exercise_cells(notebook))]


def test_the_chapters_have_exercises():
    assert len(EXERCISES) >= 11, "chapters 0 to 2 have three exercises each, chapter 3 two"


@pytest.mark.parametrize("setup, answer, check", EXERCISES)
def test_the_answer_passes_and_the_stub_fails_helpfully(setup, answer, check, capsys):
    namespace = {}
    exec(setup, namespace)
    exec(answer, namespace)
    exec(check, namespace)
    assert "correct" in capsys.readouterr().out
    exec(exercises.student_version(answer), namespace)
    with pytest.raises(exercises.ExerciseError, match="not written yet"):
        exec(check, namespace)


def test_student_version_replaces_the_answer_at_its_indentation():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n\nprint(f)"
    student = exercises.student_version(source)
    assert "return 2 * x" not in student and "BEGIN SOLUTION" not in student
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint(f)" in student
    namespace = {}
    exec(student, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)
    with pytest.raises(ValueError, match="END SOLUTION"):
        exercises.student_version("### BEGIN SOLUTION\nx = 1\n")


def test_typical_mistakes_are_named():
    def mean_based(depth):
        reads = depth > 0
        mean = (depth * reads).sum((1, 2), keepdim=True) / reads.sum((1, 2), keepdim=True).clamp_min(1)
        return torch.where(reads, (depth - mean) / cai.DEPTH_UNIT, torch.zeros(()))

    with pytest.raises(exercises.ExerciseError, match="median"):
        exercises.check_relative_depth(mean_based)
    with pytest.raises(exercises.ExerciseError, match="shape"):
        exercises.check_relative_depth(lambda depth: depth[0])
    with pytest.raises(exercises.ExerciseError, match="every cell"):
        exercises.check_depth_l1(lambda rendered, target, known: (rendered - target).abs().mean((1, 2)))
    with pytest.raises(exercises.ExerciseError, match="should be 0"):
        exercises.check_depth_l1(lambda rendered, target, known:
                                 ((rendered - target).abs() * known).sum((1, 2)) / known.sum((1, 2)))
    with pytest.raises(exercises.ExerciseError, match="L1"):
        exercises.check_depth_l1(lambda rendered, target, known:
                                 ((rendered - target) ** 2 * known).sum((1, 2)) / known.sum((1, 2)).clamp_min(1))
    with pytest.raises(exercises.ExerciseError, match="ZeroDivisionError"):
        exercises.check_depth_l1(lambda rendered, target, known: 1 / 0)


def test_typical_mistakes_of_chapters_0_to_2_are_named():
    """Each check names the usual wrong answer of its exercise, not just 'wrong'."""
    import numpy as np

    def raises(check, answer, match):
        with pytest.raises(exercises.ExerciseError, match=match):
            check(answer)

    # chapter 0
    raises(exercises.check_project, lambda points, K: (points @ K.transpose(-1, -2))[..., :2], "dividing by the depth")
    raises(exercises.check_project, lambda points, K: (points @ K)[..., :2] / (points @ K)[..., 2:], "transpose")
    def no_principal_point(points, K):
        focal = torch.stack([K[:, None, 0, 0] * points[..., 0], K[:, None, 1, 1] * points[..., 1]], -1)
        return focal / points[..., 2:]

    raises(exercises.check_project, no_principal_point, "principal point")
    raises(exercises.check_patch_similarity, lambda p: (p.flatten(1) / p.flatten(1).norm(dim=1, keepdim=True))
           @ (p.flatten(1) / p.flatten(1).norm(dim=1, keepdim=True)).T, "mean")

    def unclamped(patches):
        flat = patches.flatten(1) - patches.flatten(1).mean(1, keepdim=True)
        flat = flat / flat.norm(dim=1, keepdim=True)
        return flat @ flat.T

    raises(exercises.check_patch_similarity, unclamped, "uniform")
    raises(exercises.check_fist_components, lambda: 6, "mixture")
    raises(exercises.check_fist_components, lambda: 9, "less")

    # chapter 1
    raises(exercises.check_shape_blend, lambda template, dirs, betas: torch.einsum("bk,vdk->bvd", betas, dirs),
           "template")
    raises(exercises.check_shape_blend,
           lambda template, dirs, betas: template + torch.einsum("bk,vdk->bvd", betas, dirs), "RuntimeError")          # 4 betas against 10 directions: the crash is reported with the shapes

    def chain(reverse=False, rotate=True):
        def kinematic_chain(rotations, joints, parents):
            world, position = [rotations[:, 0]], [joints[:, 0]]
            for k in range(1, len(parents)):
                p = parents[k]
                world.append(rotations[:, k] @ world[p] if reverse else world[p] @ rotations[:, k])
                bone = joints[:, k] - joints[:, p]
                position.append(position[p] + ((world[p] @ bone[..., None])[..., 0] if rotate else bone))
            return torch.stack(world, 1), torch.stack(position, 1)
        return kinematic_chain

    raises(exercises.check_kinematic_chain, chain(reverse=True), "wrong order")
    raises(exercises.check_kinematic_chain, chain(rotate=False), "not turned")
    raises(exercises.check_hand_lengths, lambda: torch.full((1000,), 0.185), "metres")
    raises(exercises.check_hand_lengths, lambda: torch.full((1000,), 185.0), "hardly vary")

    # chapter 2
    def canonical(mirror=False, scale=True):
        def answer(w):
            rel = w - w[:, :1]
            if scale:
                rel = rel / (rel[:, 10] - rel[:, 9]).norm(dim=-1)[:, None, None]
            y = torch.nn.functional.normalize(rel[:, 9], dim=-1)
            x = torch.nn.functional.normalize(rel[:, 17] - (rel[:, 17] * y).sum(-1, keepdim=True) * y, dim=-1)
            z = torch.cross(y, x, dim=-1) if mirror else torch.cross(x, y, dim=-1)
            return rel @ torch.stack([x, y, z], 1).transpose(1, 2)
        return answer

    raises(exercises.check_canonical, canonical(scale=False), "divide by s")
    raises(exercises.check_canonical, canonical(mirror=True), "mirror")
    raises(exercises.check_pck, lambda e, t: np.array([(np.nan_to_num(e, nan=np.inf) <= x).mean() for x in t]),
           "counted as wrong")
    raises(exercises.check_pck, lambda e, t: np.array([(e[~np.isnan(e)] <= x).mean() for x in t]), "pooled")
    raises(exercises.check_pck, lambda e, t: np.nanmean(
        [[(c[~np.isnan(c)] < x).mean() for x in t] for c in e.T if (~np.isnan(c)).any()], axis=0), "<=")
    raises(exercises.check_readout_error, lambda: 1.56 / 4, "cells")


def test_student_notebooks_hold_no_answer(tmp_path):
    """`make student`: every notebook's student version is valid nbformat, with stubs for the solutions,
    no instructor cell, and no output left in an exercise or check cell."""
    import nbformat

    written = exercises.write_student_notebooks(NOTEBOOKS, tmp_path)
    assert [path.name for path in written] == [path.name for path in NOTEBOOKS]
    for instructor, student in zip(NOTEBOOKS, written):
        notebook = nbformat.read(student, as_version=4)
        nbformat.validate(notebook)
        text = student.read_text()
        assert exercises.BEGIN_SOLUTION not in text and exercises.END_SOLUTION not in text, student.name
        assert exercises.INSTRUCTOR_MARKER not in text, student.name
        original = json.loads(instructor.read_text())["cells"]
        answers = [c for c in original if exercises.is_instructor_only(c)]
        assert len(notebook.cells) == len(original) - len(answers)
        for cell in notebook.cells:
            if cell.cell_type == "code" and (exercises.STUB in cell.source or "exercises.check_" in cell.source):
                assert cell.outputs == [] and cell.execution_count is None, (student.name, cell.source[:80])
        stubs = sum(exercises.STUB in c.source for c in notebook.cells if c.cell_type == "code")
        assert stubs == sum(exercises.has_solution(exercises.cell_source(c)) for c in original if c["cell_type"] == "code")


def test_every_chapter_from_0_has_its_exercises_and_answers():
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        solutions = [c for c in cells if c["cell_type"] == "code" and exercises.has_solution(exercises.cell_source(c))]
        assert len(solutions) >= 2, f"{notebook.name}: {len(solutions)} exercises"
        if notebook.stem[:2] in ("00", "01", "02"):
            assert len(solutions) >= 3, f"{notebook.name}: two on the method and one experiment"
            assert any(exercises.is_instructor_only(c) for c in cells), f"{notebook.name}: no answers"


def test_the_checks_of_chapter_4_pass_the_answer_and_name_typical_mistakes():
    """Chapter 4's notebook lands with its shipped checkpoint; its checks are tested here meanwhile."""
    def project(points, camera):
        return camera[:, None, :1] * points[..., :2] + camera[:, None, 1:]

    def fraction_outside(vertices_2d, mask):
        height, width = mask.shape[-2:]
        column, row = vertices_2d[..., 0].floor().long(), vertices_2d[..., 1].floor().long()
        inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
        batch = torch.arange(len(mask))[:, None].expand_as(column)
        on_hand = mask[batch, row.clamp(0, height - 1), column.clamp(0, width - 1)] > 0.5
        return 1.0 - (on_hand & inside).float().mean(dim=1)

    exercises.check_weak_perspective(project)
    exercises.check_fraction_outside(fraction_outside)
    with pytest.raises(exercises.ExerciseError, match="translation is missing"):
        exercises.check_weak_perspective(lambda points, camera: camera[:, None, :1] * points[..., :2])
    with pytest.raises(exercises.ExerciseError, match="divided by the depth"):
        exercises.check_weak_perspective(lambda points, camera: camera[:, None, :1] * points[..., :2]
                                         / points[..., 2:] + camera[:, None, 1:])
    with pytest.raises(exercises.ExerciseError, match="inside"):
        exercises.check_fraction_outside(lambda vertices_2d, mask: 1 - fraction_outside(vertices_2d, mask))
    def swapped(vertices_2d, mask):                                  # mask[b, u, v] instead of mask[b, v, u]
        height, width = mask.shape[-2:]
        column, row = vertices_2d[..., 0].floor().long(), vertices_2d[..., 1].floor().long()
        inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
        batch = torch.arange(len(mask))[:, None].expand_as(column)
        on_hand = mask[batch, column.clamp(0, height - 1), row.clamp(0, width - 1)] > 0.5
        return 1.0 - (on_hand & inside).float().mean(dim=1)

    with pytest.raises(exercises.ExerciseError, match="swapped"):
        exercises.check_fraction_outside(swapped)
    with pytest.raises(exercises.ExerciseError, match="not written yet"):
        exercises.check_fraction_outside(lambda vertices_2d, mask: (_ for _ in ()).throw(NotImplementedError()))


def test_the_checks_of_chapter_5_pass_the_answer_and_name_typical_mistakes():
    """Chapter 5's notebook lands with its shipped checkpoint; its checks are tested here meanwhile."""
    def read_locations(heatmaps, location_maps):
        batch, count, height, width = heatmaps.shape
        peak = heatmaps.flatten(2).argmax(-1)                                       # (B, 21)
        row, column = peak // width, peak % width
        b, j = torch.meshgrid(torch.arange(batch), torch.arange(count), indexing="ij")
        return location_maps[b, j, :, row, column]                                  # (B, 21, 3)

    def local_rotations(world, parents):
        local = [world[:, 0]] + [world[:, p].transpose(-1, -2) @ world[:, k] for k, p in enumerate(parents) if k]
        return torch.stack(local, 1)

    exercises.check_location_readout(read_locations)
    exercises.check_local_rotations(local_rotations)
    with pytest.raises(exercises.ExerciseError, match="wrist's peak"):
        exercises.check_location_readout(lambda heatmaps, maps: read_locations(heatmaps[:, :1].expand_as(heatmaps),
                                                                               maps))
    with pytest.raises(exercises.ExerciseError, match="wrong cell"):
        exercises.check_location_readout(lambda heatmaps, maps: read_locations(heatmaps.transpose(-1, -2),
                                                                               maps.transpose(-1, -2)).flip(0))
    with pytest.raises(exercises.ExerciseError, match="wrong order"):
        exercises.check_local_rotations(lambda world, parents: torch.stack(
            [world[:, 0]] + [world[:, k] @ world[:, p].transpose(-1, -2) for k, p in enumerate(parents) if k], 1))


def test_the_bone_ratio_check_of_chapter_5_passes_the_answer_and_names_typical_mistakes():
    from handlib.skeleton import BONES

    def lengths(keypoints):
        return torch.stack([(keypoints[:, c] - keypoints[:, p]).norm(dim=-1) for p, c in BONES], 1)

    def bone_ratios(keypoints):
        return lengths(keypoints) / (keypoints[:, 0] - keypoints[:, 9]).norm(dim=-1, keepdim=True)

    exercises.check_bone_ratios(bone_ratios)
    with pytest.raises(exercises.ExerciseError, match="lengths themselves"):
        exercises.check_bone_ratios(lengths)
    with pytest.raises(exercises.ExerciseError, match="scale bone"):
        exercises.check_bone_ratios(lambda k: lengths(k) / (k[:, 10] - k[:, 9]).norm(dim=-1, keepdim=True))
    with pytest.raises(exercises.ExerciseError, match="its own"):
        exercises.check_bone_ratios(lambda k: lengths(k) / (k[:1, 0] - k[:1, 9]).norm(dim=-1, keepdim=True))
    with pytest.raises(exercises.ExerciseError, match="20 bones"):
        exercises.check_bone_ratios(lambda k: torch.cat([torch.zeros(len(k), 1), bone_ratios(k)], 1))
    with pytest.raises(exercises.ExerciseError, match="not written yet"):
        exercises.check_bone_ratios(lambda k: (_ for _ in ()).throw(NotImplementedError()))


def test_the_checks_of_chapter_6_pass_the_answer_and_name_typical_mistakes():
    """Chapter 6 (Ge et al. 2019): the rescaled Laplacian, the Chebyshev recursion, the edge-length term."""
    def normalized(adjacency, binary=False):
        weights = (adjacency > 0).float() if binary else adjacency
        inverse_sqrt = weights.sum(1).rsqrt()
        return torch.eye(len(weights)) - inverse_sqrt[:, None] * weights * inverse_sqrt[None, :]

    def rescaled(adjacency, scale=2.0, lambda_max=None, binary=False):
        laplacian = normalized(adjacency, binary)
        largest = torch.linalg.eigvalsh(laplacian.double())[-1].item() if lambda_max is None else lambda_max
        return scale * laplacian / largest - torch.eye(len(adjacency))

    def chebyshev(laplacian, x, order, minus=True, first=1.0):
        terms = [x, first * laplacian @ x][:order]
        for _ in range(2, order):
            terms.append(2 * laplacian @ terms[-1] - (terms[-2] if minus else 0))
        return torch.stack(terms)

    def edge_term(predicted, target, edges, vectors=False, squared_lengths=False):
        def sides(v):
            return v[:, edges[:, 0]] - v[:, edges[:, 1]]
        if vectors:
            return ((sides(predicted) - sides(target)) ** 2).sum(-1).mean(1)
        if squared_lengths:
            return ((sides(predicted).square().sum(-1) - sides(target).square().sum(-1)) ** 2).mean(1)
        return ((sides(predicted).norm(dim=-1) - sides(target).norm(dim=-1)) ** 2).mean(1)

    exercises.check_rescaled_laplacian(rescaled)
    exercises.check_chebyshev_terms(chebyshev)
    exercises.check_edge_length_term(edge_term)

    def raises(check, answer, match):
        with pytest.raises(exercises.ExerciseError, match=match):
            check(answer)

    raises(exercises.check_rescaled_laplacian, lambda a: rescaled(a, scale=0.5), "released code")
    raises(exercises.check_rescaled_laplacian, lambda a: rescaled(a, lambda_max=2.0), "bound")
    raises(exercises.check_rescaled_laplacian, lambda a: rescaled(a) + torch.eye(len(a)), "identity")
    raises(exercises.check_rescaled_laplacian, lambda a: rescaled(a, binary=True), "weights")
    raises(exercises.check_rescaled_laplacian, lambda a: torch.eye(len(a)) - a / a.sum(1, keepdim=True), "symmetric")
    raises(exercises.check_chebyshev_terms, lambda l, x, k: torch.stack([torch.linalg.matrix_power(l, i) @ x
                                                                        for i in range(k)]), "powers")
    raises(exercises.check_chebyshev_terms, lambda l, x, k: chebyshev(l, x, k, minus=False), "x_{k-2} is missing")
    raises(exercises.check_chebyshev_terms, lambda l, x, k: chebyshev(l, x, k, first=2.0), "without the 2")
    raises(exercises.check_chebyshev_terms, lambda l, x, k: chebyshev(l, x, k + 1), "4 terms")
    raises(exercises.check_edge_length_term, lambda p, t, e: edge_term(p, t, e, vectors=True), "vectors")
    raises(exercises.check_edge_length_term, lambda p, t, e: edge_term(p, t, e, squared_lengths=True),
           "squared lengths")
    raises(exercises.check_edge_length_term, lambda p, t, e: edge_term(p, t, e).mean(), "shape")
    raises(exercises.check_edge_length_term, lambda p, t, e: (_ for _ in ()).throw(NotImplementedError()),
           "not written yet")


def test_the_checks_of_chapter_7_pass_the_answer_and_name_typical_mistakes():
    """Chapter 7 (the benchmark): the AUC of a PCK curve over 20-50 mm, the Procrustes alignment."""
    import numpy as np

    from handlib import metrics

    def auc(errors, low=20.0, high=50.0, steps=31, normalise=True, rectangle=False):
        thresholds = np.linspace(low, high, steps)
        curve = metrics.pck_curve(errors, thresholds)
        if rectangle:
            return float(curve.mean())
        area = np.trapezoid(curve, thresholds)
        return float(area / (high - low)) if normalise else float(area)

    def align(pred, target, scale=True, reflections=False, norms=False, centre=True):
        mean_p, mean_q = pred.mean(1, keepdim=True), target.mean(1, keepdim=True)
        p, q = (pred - mean_p, target - mean_q) if centre else (pred, target)
        u, sigma, vt = torch.linalg.svd(p.transpose(1, 2) @ q)
        sign = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
        sign = torch.ones_like(sign) if reflections else sign
        d = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1)
        rotation = vt.transpose(1, 2) @ torch.diag_embed(d) @ u.transpose(1, 2)
        s = (sigma * d).sum(-1) / p.square().sum((1, 2)) if scale else torch.ones(len(p), dtype=p.dtype)
        if norms:
            s = q.norm(dim=(1, 2)) / p.norm(dim=(1, 2))
        return s[:, None, None] * p @ rotation.transpose(1, 2) + (mean_q if centre else 0)

    exercises.check_auc_20_50(auc)
    exercises.check_procrustes(align)

    def raises(check, answer, match):
        with pytest.raises(exercises.ExerciseError, match=match):
            check(answer)

    raises(exercises.check_auc_20_50, lambda e: auc(e, normalise=False), "divide by the width")
    raises(exercises.check_auc_20_50, lambda e: auc(e, low=0.0, steps=51), "20 to 50 mm")
    raises(exercises.check_auc_20_50, lambda e: auc(e, rectangle=True), "trapezoid")
    raises(exercises.check_auc_20_50, lambda e: auc(e / 1000.0), "units")
    raises(exercises.check_auc_20_50, lambda e: np.nanmean(e), "not in")
    raises(exercises.check_auc_20_50, lambda e: (_ for _ in ()).throw(NotImplementedError()), "not written yet")
    raises(exercises.check_procrustes, lambda p, q: align(p, q, scale=False), "scale is missing")
    raises(exercises.check_procrustes, lambda p, q: align(p, q, reflections=True), "mirror")
    raises(exercises.check_procrustes, lambda p, q: align(p, q, norms=True), "the scale")
    raises(exercises.check_procrustes, lambda p, q: align(p, q, centre=False), "centroid")
    raises(exercises.check_procrustes, lambda p, q: p[0], "shape")
