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
    code = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    return [(code[0], source, code[i + 1]) for i, source in enumerate(code)
            if exercises.has_solution(source) and i + 1 < len(code)]


EXERCISES = [pytest.param(*cells, id=f"{notebook.stem}-{k}")
             for notebook in NOTEBOOKS for k, cells in enumerate(exercise_cells(notebook))]


def test_the_chapters_have_exercises():
    assert len(EXERCISES) >= 2, "chapter 3 has two exercises"


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
