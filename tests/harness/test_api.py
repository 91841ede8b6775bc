import numpy as np
import pytest

from harness.api import ClassMap, Predictions, Result


def test_singleton_map_keeps_columns_in_member_order():
    cmap = ClassMap("sub", "toy-5", ("b", "d"), ((1,), (3,)))
    logits = np.arange(10, dtype=np.float32).reshape(2, 5)
    assert cmap.project(logits).tolist() == [[1, 3], [6, 8]]


def test_many_to_one_map_takes_max_over_members():
    cmap = ClassMap("groups", "toy-5", ("x", "y"), ((0, 4), (1, 2)))
    logits = np.array([[5.0, 1.0, 2.0, 0.0, 9.0], [0.0, 3.0, -1.0, 7.0, 1.0]])
    assert cmap.project(logits).tolist() == [[9.0, 2.0], [1.0, 3.0]]
    assert cmap.source_to_target() == {0: 0, 4: 0, 1: 1, 2: 1}


def test_logsumexp_reduction():
    cmap = ClassMap("g", "toy-2", ("x",), ((0, 1),), reduce="logsumexp")
    out = cmap.project(np.array([[0.0, 0.0]]))
    assert out[0, 0] == pytest.approx(np.log(2.0))


def test_map_rejects_bad_shapes_and_overlaps():
    with pytest.raises(ValueError, match="2 targets but 1 member"):
        ClassMap("bad", "s", ("a", "b"), ((0,),))
    with pytest.raises(ValueError, match="reduce must be"):
        ClassMap("bad", "s", ("a",), ((0,),), reduce="min")
    overlapping = ClassMap("o", "s", ("a", "b"), ((0, 1), (1,)))
    with pytest.raises(ValueError, match="source index 1 belongs to two targets"):
        overlapping.source_to_target()


def test_digest_changes_with_content():
    a = ClassMap("m", "s", ("a",), ((0,),))
    b = ClassMap("m", "s", ("a",), ((1,),))
    assert a.digest() != b.digest()
    assert a.digest() == ClassMap("other-name", "s", ("a",), ((0,),)).digest()


def test_predictions_round_trip_without_pickle(tmp_path):
    preds = Predictions(
        model="m",
        shift="s",
        keys=np.array(["a/1.jpg", "b/2.jpg"]),
        labels=np.array([0, 3]),
        logits=np.array([[1.5, -2.0], [0.25, 4.0]], dtype=np.float16),
        meta={"region": np.array([1, 5])},
    )
    sha = preds.save(tmp_path / "p.npz")
    back = Predictions.load(tmp_path / "p.npz")
    assert back.keys.tolist() == ["a/1.jpg", "b/2.jpg"]
    assert back.labels.tolist() == [0, 3]
    assert back.logits.dtype == np.float16
    assert back.meta["region"].tolist() == [1, 5]
    assert back.sha256() == sha
    assert not (tmp_path / "p.npz.tmp").exists()


def test_predictions_reject_ragged_columns():
    with pytest.raises(ValueError, match="2 keys, 1 labels"):
        Predictions("m", "s", np.array(["a", "b"]), np.array([0]), np.zeros((2, 2)))


def test_truncated_predictions_file_is_a_clear_error(tmp_path):
    path = tmp_path / "p.npz"
    Predictions("m", "s", np.array(["a"]), np.array([0]), np.zeros((1, 3))).save(path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable predictions file"):
        Predictions.load(path)


def test_result_rejects_unknown_fields():
    row = Result("m", "s", "s", "1", 2, 2, {"top1": 0.5}).to_json()
    import json

    data = json.loads(row)
    assert Result.from_dict(data).metrics == {"top1": 0.5}
    data["acc"] = 1
    with pytest.raises(ValueError, match="unknown fields"):
        Result.from_dict(data)
