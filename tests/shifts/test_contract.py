"""Every registered shift: spec sanity, fixture reading, and folder == packed shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.api import is_unlabeled
from harness.registry import get_shift, shifts
from shifts import fixtures
from shifts.base import DatasetShift
from shifts.pack import pack

ALL = shifts.names()


def test_every_builtin_shift_is_registered():
    assert set(fixtures.WRITERS) | {"wds"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_spec_is_complete(name):
    shift = get_shift(name)
    spec = shift.spec
    assert isinstance(shift, DatasetShift) and spec.name == name
    assert spec.default_split in spec.splits
    assert spec.main_metric in spec.metrics or (is_unlabeled(spec) and spec.metrics == ())
    assert all("{c}" in t for t in shift.templates())
    if spec.family != "user":
        assert spec.num_classes > 0 and spec.expected_size > 0 and spec.homepage
    if spec.class_map is not None:
        assert len(spec.class_map) == spec.num_classes


@pytest.mark.parametrize("name", ALL)
def test_missing_data_error_lists_where_it_looked(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="looked|no class folders|missing"):
        list(get_shift(name).examples(tmp_path / "empty"))


def _keep_last(img):
    """Keeps the (lazily decoded) image without decoding it: only the last one is compared."""
    return img


def _data_root(name: str, tmp: Path) -> Path:
    root = tmp / "data"
    fixtures.WRITERS[name](root)
    return root


@pytest.mark.parametrize("name", sorted(fixtures.WRITERS))
def test_folder_and_packed_shards_give_identical_examples(name, tmp_path):
    shift = get_shift(name)
    root = _data_root(name, tmp_path)
    spec = shift.spec_for(root)
    folder = list(shift.examples(root, _keep_last, form="folder"))
    assert folder, "fixture produced no examples"
    assert len({e.key for e in folder}) == len(folder), "keys must be unique"
    assert all(0 <= e.label < spec.num_classes for e in folder)
    assert len(shift.classnames(root)) == spec.num_classes
    if name in ("folder",):
        out = tmp_path / "packed"
        pack(shift, root, out, maxcount=3, progress=False)
        packed = list(get_shift("wds").examples(out, _keep_last))
    else:
        out = root / shift.wds_names()[0]
        pack(shift, root, out, maxcount=400, progress=False)
        packed = list(shift.examples(root, _keep_last, form="wds"))
    assert [(e.key, e.label, dict(e.meta)) for e in packed] == [
        (e.key, e.label, dict(e.meta)) for e in folder
    ]
    a, b = folder[-1].image, packed[-1].image  # decoded pixels agree too
    assert a.size == b.size and a.tobytes() == b.tobytes()
