"""ImageNet metadata read from timm's and open_clip's package files."""

from __future__ import annotations

from shifts.imagenet_meta import (
    imagenet_classnames,
    imagenet_templates,
    imagenet_wnids,
    subset_class_map,
)


def test_wnids_sorted_and_known_ends():
    w = imagenet_wnids()
    assert len(w) == 1000 and w[0] == "n01440764" and w[-1] == "n15075141"


def test_openai_classnames_keep_their_duplicates():
    n = imagenet_classnames()
    assert n[0] == "tench" and n[-1] == "toilet paper"
    # "missile" and "sunglasses" each name two classes: never build name -> index from this list
    assert [i for i, x in enumerate(n) if x == "missile"] == [657, 744]
    assert [i for i, x in enumerate(n) if x == "sunglasses"] == [836, 837]


def test_templates_parsed_from_open_clip_without_importing_it():
    t = imagenet_templates()
    assert len(t) == 80 and t[0] == "a bad photo of a {c}." and t[-1] == "a tattoo of the {c}."
    assert t[0].format(c="tench") == "a bad photo of a tench."


def test_subset_maps_are_ascending_singletons():
    r, a = subset_class_map("r"), subset_class_map("a")
    assert r.members[:3] == ((1,), (2,), (4,)) and a.members[0] == (6,)
    assert list(r.source_indices) == [m[0] for m in r.members]
    assert r.targets[0] == "n01443537" and a.targets[0] == "n01498041"
