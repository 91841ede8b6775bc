"""The leaderboard's default suite against the registered shifts: names resolve, and each OOD
shift is paired with the ID setting its effective robustness is measured against."""

from harness.registry import get_shift
from reports.leaderboard.ranking import setting_pairs
from reports.submission import DEFAULT_REQUIRED_SHIFTS


def test_default_suite_is_registered_and_paired():
    specs = {name: get_shift(name).spec for name in DEFAULT_REQUIRED_SHIFTS}
    assert {n: s.expected_size for n, s in specs.items()} == {
        "imagenet": 50_000,
        "imagenetv2": 10_000,
        "imagenet-r": 30_000,
        "imagenet-sketch": 50_889,
        "imagenet-a": 7_500,
        "objectnet": 18_574,
    }
    pairs = setting_pairs(DEFAULT_REQUIRED_SHIFTS, specs)
    assert pairs["imagenet-r"] == "imagenet@imagenet-r"
    assert pairs["imagenet-a"] == "imagenet@imagenet-a"
    assert pairs["imagenetv2"] == "imagenet" and pairs["imagenet-sketch"] == "imagenet"
    assert "imagenet" not in pairs  # the ID shift itself
    # ObjectNet's map comes from the dataset's own files, so its spec has none: full val is its x
    assert pairs["objectnet"] == (
        "imagenet@objectnet" if specs["objectnet"].class_map else "imagenet"
    )
