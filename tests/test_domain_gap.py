"""benchmarks/domain_gap.py: every arm is a valid recipe that differs from the full one, and the stored
table merges new rows by arm and steps."""
import pytest


@pytest.fixture(scope="module")
def gap(benchmark_script):
    return benchmark_script("domain_gap")


def test_every_arm_is_a_valid_recipe_and_undoes_something(gap):
    full, _ = gap.arm_config("full recipe", steps=40, train_samples=64)
    assert (full.steps, full.milestones, full.train_samples, full.checkpoint_every) == (40, (30,), 64, 10)
    seen = set()
    for arm in gap.ARMS:
        config, overrides = gap.arm_config(arm, steps=40, train_samples=64)
        engine = config.synth_config()                    # raises on a misspelled knob or value
        assert (config.steps, config.train_samples) == (40, 64), arm
        if arm != "full recipe":
            assert config != full and overrides, f"{arm} changes nothing"
            assert (engine, config.camera_effects, config.coordinate_weight) not in seen, f"{arm} repeats an arm"
        seen.add((engine, config.camera_effects, config.coordinate_weight))
    assert gap.slug("- skin detail") == "skin_detail"
    with pytest.raises(KeyError):
        gap.arm_config("- sunshine", steps=40, train_samples=64)


def test_new_rows_replace_those_of_the_same_arm_and_steps(gap):
    stored = [{"arm": "full recipe", "steps": 2400, "proxy_px": 23.0}, {"arm": "full recipe", "steps": 400, "proxy_px": 36.0},
              {"arm": "crop centre", "real_photos_px": 30.5}]
    new = [{"arm": "full recipe", "steps": 2400, "proxy_px": 22.0}, {"arm": "- forearm", "steps": 2400, "proxy_px": 25.0},
           {"arm": "crop centre", "real_photos_px": 30.4}]
    rows = gap.merged_rows(stored, new)
    assert [(row["arm"], row.get("steps")) for row in rows] == [
        ("full recipe", 400), ("full recipe", 2400), ("- forearm", 2400), ("crop centre", None)]
    assert rows[1]["proxy_px"] == 22.0 and rows[3]["real_photos_px"] == 30.4
