"""Cost of validating a submission against the least any reader must do: inflate the bundle
and load its arrays (tarfile + np.load, no checks). The ratio is the price of the safety limits,
hashes and recomputed metrics. Run with ``pytest tests/benchmarks --benchmark-only``."""

import io
import json
import tarfile

import numpy as np
import pytest

from harness.api import ClassMap, Predictions, Shift, ShiftSpec, id_view_setting
from harness.metrics import id_view, score
from reports.submission import load_card, write_bundle
from reports.submission_validate import validate_bundle

MEANS: dict[str, float] = {}
SUBSET = ClassMap(
    "bench-r",
    "imagenet-1k",
    tuple(f"c{i}" for i in range(200)),
    tuple((5 * i,) for i in range(200)),
)
SPECS = {
    "bench": ShiftSpec("bench", "1", "bench", "imagenet-1k", 1000, 20_000),
    "bench-r": ShiftSpec(
        "bench-r", "1", "bench", "imagenet-1k", 200, 10_000, class_map=SUBSET, id_reference="bench"
    ),
}


class BenchShift(Shift):
    def __init__(self, name):
        self.spec = SPECS[name]

    def examples(self, root, transform=None, split=None):
        raise NotImplementedError("benchmarks never read data")


def _row(model, setting, shift, preds, spec, sha):
    metrics, groups = score(preds, spec)
    return {
        "model": model, "setting": setting, "shift": shift, "shift_version": "1", "n": len(preds),
        "n_expected": spec.expected_size, "metrics": metrics, "class_map": spec.class_map.digest() if spec.class_map else None,
        "protocol": {}, "group_counts": groups, "predictions_sha256": sha, "provenance": {},
    }  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import dataclasses

    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    rows = []
    preds = {}
    for name, spec in SPECS.items():
        n = spec.expected_size
        labels = rng.integers(0, spec.num_classes, size=n)
        p = Predictions(
            "m",
            name,
            np.array([f"k{i:06d}" for i in range(n)]),
            labels,
            rng.normal(size=(n, 1000)).astype(np.float16),
        )
        sha = p.save(root / "run" / "predictions" / "m" / f"{name}.npz")
        preds[name] = p
        rows.append(_row("m", name, name, p, spec, sha))
    setting = id_view_setting("bench", "bench-r")
    view = id_view(preds["bench"], SUBSET, setting)
    vspec = dataclasses.replace(
        SPECS["bench-r"], name=setting, expected_size=len(view), id_reference=None
    )
    rows.append(_row("m", setting, "bench", view, vspec, preds["bench"].sha256()))
    (root / "run" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = root / "card.toml"
    card.write_text(
        'name = "m"\narchitecture = "x"\nparameters = 1\npretraining_data = "none"\nfinetuning_data = "none"\n'
        'extra_data = false\nauthors = ["a"]\nlicence = "MIT"\n[method]\nkind = "standard"\n'
    )
    out = root / "m.tar.gz"
    write_bundle(root / "run", load_card(card), out)
    assert validate_bundle(out, required=tuple(SPECS), get_shift=BenchShift).ok
    return out


def unpack_only(path):
    """The floor: inflate every member and load every array, trusting everything."""
    arrays = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            if m.name.endswith(".npz"):
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    arrays.append({k: z[k] for k in z.files})
    return arrays


def _record(benchmark, key, base_key):
    MEANS[key] = benchmark.stats.stats.mean
    if base_key in MEANS:
        benchmark.extra_info["ratio_vs_unpack"] = round(MEANS[key] / MEANS[base_key], 2)


@pytest.mark.benchmark(group="validate-30k-x-1000")
def test_unpack_only_baseline(benchmark, bundle):
    benchmark.pedantic(unpack_only, args=(bundle,), rounds=3)
    _record(benchmark, "unpack", "")


@pytest.mark.benchmark(group="validate-30k-x-1000")
def test_validate(benchmark, bundle):
    benchmark.pedantic(
        validate_bundle,
        args=(bundle,),
        kwargs={"required": tuple(SPECS), "get_shift": BenchShift},
        rounds=3,
    )
    _record(benchmark, "validate", "unpack")
