"""The report's mark for known releases checked against their published figures."""

from reports.pdf import fit, published_mark


def test_a_model_is_marked_by_its_worst_published_check():
    assert published_mark(("clip", "reproduces-published"), "") == "= "
    assert published_mark(("clip",), "= ") == "= "  # another setting of the same model passed
    assert published_mark(("differs-from-published",), "= ") == "! "  # one failure marks the model
    assert published_mark(("reproduces-published",), "! ") == "! "
    assert published_mark(("clip",), "") == ""  # no known release: no mark


def test_long_names_are_cut_in_the_middle_keeping_what_tells_them_apart():
    name = "wiseft:ViT-B-32[zs 1a2b3c4d,ft 5e6f7a8b](alpha=0.5)"
    cut = fit(name, 42)
    assert len(cut) == 42 and cut.startswith("wiseft:ViT-B-32[zs") and cut.endswith("5e6f7a8b](alpha=0.5)")
    assert fit("clip:ViT-B-32", 42) == "clip:ViT-B-32"
