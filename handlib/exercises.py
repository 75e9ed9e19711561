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
uses) on seeded inputs, including the edge cases, and names the first thing that differs.
"""
from __future__ import annotations

import re

import torch

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
STUB = "raise NotImplementedError()"
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
