"""Where and how big things run: the profile, the device, seeding, thread counts."""
import random

import numpy as np
import pytest
import torch

from handlib import runtime


def test_profile_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("HANDLIB_PROFILE", "full")
    assert runtime.get_profile() == "full"
    assert runtime.get_profile("quick") == "quick"
    monkeypatch.delenv("HANDLIB_PROFILE")
    assert runtime.get_profile() == ("full" if torch.cuda.is_available() else "quick")
    monkeypatch.setenv("HANDLIB_PROFILE", "huge")
    with pytest.raises(ValueError, match="HANDLIB_PROFILE"):
        runtime.get_profile()


def test_device_defaults_to_cuda_when_there_is_one():
    assert runtime.get_device("cpu") == torch.device("cpu")
    assert runtime.get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_same_seed_gives_the_same_numbers_everywhere():
    def draw(seed):
        generator = runtime.seed_everything(seed)
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()

    assert draw(7) == draw(7) and draw(7) != draw(8)
    with pytest.raises(ValueError, match="seed"):
        runtime.seed_everything(-1)


def test_torch_threads_is_restored_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with runtime.torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside the block")
    assert torch.get_num_threads() == before
    assert runtime.available_cpus() >= 1
