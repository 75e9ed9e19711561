"""Camera effects drawn over training batches (handlib.data.augment)."""
import pytest
import torch

from handlib.data.augment import EFFECTS, blur_images, camera_effects, defocus_kernels, jpeg, motion_kernels


def images(count=6, size=32):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, size, size, generator=generator)


def test_the_same_generator_state_gives_the_same_images_and_another_gives_others():
    batch = images()
    first = camera_effects(batch, torch.Generator().manual_seed(5))
    assert torch.equal(first, camera_effects(batch, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, camera_effects(batch, torch.Generator().manual_seed(6)))
    assert first.shape == batch.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(batch, images())                                     # the input is left as it was


def test_no_effect_changes_nothing_and_each_effect_changes_every_image():
    batch = images()
    assert torch.equal(camera_effects(batch, torch.Generator().manual_seed(1), effects={}), batch)
    for effect in EFFECTS:
        out = camera_effects(batch, torch.Generator().manual_seed(1), effects={effect: 1.0})
        changed = (out - batch).abs().flatten(1).amax(1) > 1e-3
        assert changed.all(), effect


def test_which_images_get_an_effect_does_not_depend_on_the_other_probabilities():
    """Every draw happens whatever the probabilities: turning one effect off leaves the others' draws."""
    batch = images()
    both = camera_effects(batch, torch.Generator().manual_seed(2), effects={"noise": 1.0, "jpeg": 0.0})
    alone = camera_effects(batch, torch.Generator().manual_seed(2), effects={"noise": 1.0})
    assert torch.equal(both, alone)


def test_blur_kernels_sum_to_one_and_keep_a_flat_image_flat():
    sigma = torch.tensor([0.5, 2.0])
    kernels = torch.cat([defocus_kernels(sigma), motion_kernels(torch.tensor([3.0, 9.0]), torch.tensor([0.0, 1.0]))])
    assert torch.allclose(kernels.sum((1, 2)), torch.ones(4))
    flat = torch.full((4, 3, 16, 16), 0.4)
    assert torch.allclose(blur_images(flat, kernels), flat, atol=1e-6)
    # A horizontal streak spreads a dot along x only.
    dot = torch.zeros(1, 3, 15, 15)
    dot[..., 7, 7] = 1.0
    streak = blur_images(dot, motion_kernels(torch.tensor([7.0]), torch.tensor([0.0])))[0, 0]
    assert streak[7, 4:11].min() > 0 and streak[6].abs().max() < 1e-6


def test_jpeg_keeps_the_picture_roughly_and_bad_input_is_refused():
    image = images(1, 32)[0]
    smooth = torch.nn.functional.avg_pool2d(image[None], 5, 1, 2, count_include_pad=False)[0]
    assert (jpeg(smooth, 90) - smooth).abs().mean() < 0.03
    with pytest.raises(ValueError, match=r"images: expected shape \(B, 3, H, W\)"):
        camera_effects(torch.rand(3, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match="unknown"):
        camera_effects(images(), torch.Generator(), effects={"fog": 1.0})
