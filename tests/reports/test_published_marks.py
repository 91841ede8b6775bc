"""The report's mark for known releases checked against their published figures."""

from reports.summary_table import TableRow, published_verdict


def test_a_model_is_marked_by_its_worst_published_check():
    assert published_verdict(("clip", "reproduces-published"), "") == "reproduces"
    assert published_verdict(("clip",), "reproduces") == "reproduces"  # another setting of the model passed
    assert published_verdict(("differs-from-published",), "reproduces") == "differs"  # one failure marks it
    assert published_verdict(("reproduces-published",), "differs") == "differs"
    assert published_verdict(("clip",), "") == ""  # no known release: no mark
    assert TableRow("run:x", "clip:ViT-B-32", published="reproduces").published_mark() == "= "
    assert TableRow("run:x", "clip:ViT-B-32", published="differs").published_mark() == "! "
    assert TableRow("run:x", "clip:ViT-B-32").published_mark() == ""
