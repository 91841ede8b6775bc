"""The near-chance alarm: OOD at chance next to a healthy ID reference."""

from __future__ import annotations

from harness.api import ClassMap, Result, ShiftSpec
from harness.engine.sanity import near_chance

R_MAP = ClassMap(name="r", source="imagenet-1k", targets=tuple(f"c{i}" for i in range(200)), members=tuple((i,) for i in range(200)))
SPECS = {
    "imagenet": ShiftSpec("imagenet", "1", "imagenet", "imagenet-1k", 1000, 50_000),
    "imagenet-r": ShiftSpec("imagenet-r", "1", "imagenet", "imagenet-1k", 200, 30_000, class_map=R_MAP, id_reference="imagenet"),
    "imagenetv2": ShiftSpec("imagenetv2", "1", "imagenet", "imagenet-1k", 1000, 10_000, id_reference="imagenet"),
    "toy": ShiftSpec("toy", "1", "toy", "toy-4", 4, 400, id_reference="imagenet"),
    "imagenet-a": ShiftSpec("imagenet-a", "1", "imagenet", "imagenet-1k", 200, 7_500, class_map=R_MAP, id_reference="imagenet"),
}


def row(setting: str, top1: float, n: int = 1000, model: str = "m") -> Result:
    shift = setting.split("@")[-1] if "@" not in setting else setting.split("@")[0]
    return Result(model=model, setting=setting, shift=shift, shift_version="1", n=n, n_expected=n, metrics={"top1": top1})


def test_ood_at_chance_next_to_a_healthy_id_reference_is_flagged():
    rows = [row("imagenet", 0.76), row("imagenetv2", 0.0012, n=10_000)]
    (message,) = near_chance(rows, SPECS.__getitem__)
    assert "m on imagenetv2" in message and "0.12%" in message and "imagenet gives 76.00%" in message


def test_the_id_view_on_the_same_classes_is_the_reference_when_present():
    # ImageNet val on R's classes is at 40%, ImageNet-R at 0.6% (chance 0.5%): flagged.
    rows = [row("imagenet", 0.76), row("imagenet@imagenet-r", 0.40, n=10_000), row("imagenet-r", 0.006, n=30_000)]
    (message,) = near_chance(rows, SPECS.__getitem__)
    assert "imagenet@imagenet-r gives 40.00%" in message
    # A poor model (view at 4%, under 10x chance of 0.5%) is not flagged.
    rows[1] = row("imagenet@imagenet-r", 0.04, n=10_000)
    assert near_chance(rows, SPECS.__getitem__) == []


def test_healthy_random_tiny_and_few_class_results_are_not_flagged():
    assert near_chance([row("imagenet", 0.76), row("imagenetv2", 0.64, n=10_000)], SPECS.__getitem__) == []
    assert near_chance([row("imagenet", 0.001), row("imagenetv2", 0.001, n=10_000)], SPECS.__getitem__) == []  # random weights
    assert near_chance([row("imagenet", 0.76), row("imagenetv2", 0.001, n=50)], SPECS.__getitem__) == []  # too few to call
    assert near_chance([row("imagenet", 0.76), row("toy", 0.25, n=400)], SPECS.__getitem__) == []  # 4 classes
    # A barely working model (12% where chance is 0.1%) is not "far above chance".
    assert near_chance([row("imagenet", 0.12), row("imagenetv2", 0.001, n=10_000)], SPECS.__getitem__) == []
    # ImageNet-A is filtered to fool ResNet-50s: ~0% there next to 80% on its classes is expected.
    a_rows = [row("imagenet", 0.76), row("imagenet@imagenet-a", 0.80, n=10_000), row("imagenet-a", 0.002, n=7_500)]
    assert near_chance(a_rows, SPECS.__getitem__) == []
    other = [row("imagenet", 0.76, model="a"), row("imagenetv2", 0.001, n=10_000, model="b")]
    assert near_chance(other, SPECS.__getitem__) == []  # another model's reference does not count


def test_a_run_with_a_near_chance_shift_exits_3_and_keeps_its_results(tmp_path, monkeypatch, capsys):
    from doubles import engine_flags, registered, write_toy_data

    from harness.cli import main
    from harness.engine import sanity
    from harness.engine.store import RunDir

    # The toy shifts are too small for the alarm; lower its floors to see it fire end to end.
    monkeypatch.setattr(sanity, "MIN_CLASSES", 2)
    monkeypatch.setattr(sanity, "MIN_EXAMPLES", 1)
    monkeypatch.setattr(sanity, "ID_FACTOR", 1.0)
    monkeypatch.setattr(sanity, "ID_FLOOR", 0.0)
    monkeypatch.setattr(sanity, "OOD_FACTOR", 1.0)
    with registered():
        data = write_toy_data(tmp_path / "data")
        run_dir = tmp_path / "run"
        assert main(["run", "--model", "colour:a", "--shifts", "toy-sub", *engine_flags(data, run_dir)]) == 3
    err = capsys.readouterr().err
    assert "WARNING: colour:a on toy-sub: top1 50.00% is near chance (50.00%)" in err
    assert len(RunDir(run_dir).read_results()) == 3
