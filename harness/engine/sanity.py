"""Near-chance accuracy on a shift whose ID reference is far above chance: a broken mapping.

Most wrong numbers in this field come from class orders and mappings (ImageNetV2 read with
ImageFolder's sort order, a 1000-way argmax on ImageNet-R, an ObjectNet copy without its
mapping files). They show as an OOD accuracy at chance next to a healthy ID accuracy, so the
engine flags that pattern loudly instead of letting it reach a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from harness.api import Result, ShiftSpec

MIN_CLASSES = 20  # with fewer classes chance is too high for the rule to mean anything
MIN_EXAMPLES = 100  # fewer examples are too noisy to call
ID_FACTOR = 10.0  # the ID reference is "far above chance" at 10x chance or more ...
ID_FLOOR = 0.3  # ... and at 30% or more: a model that works, not one barely above chance
OOD_FACTOR = 2.0  # the OOD setting is "near chance" at 2x chance or less
# Shifts built to be near chance for standard models: ImageNet-A keeps the images a
# ResNet-50 gets wrong, so ~0% there is the expected result, not a mapping error.
ADVERSARIALLY_FILTERED = frozenset({"imagenet-a"})


def near_chance(rows: Iterable[Result], spec_of: Callable[[str], ShiftSpec], metric: str = "top1") -> list[str]:
    """One message per (model, OOD setting) at chance while its ID reference is far above it."""
    rows = list(rows)
    by_setting = {(r.model, r.setting): r for r in rows}
    messages = []
    for row in rows:
        if row.setting != row.shift or metric not in row.metrics:
            continue
        spec = spec_of(row.shift)
        if spec.id_reference is None or spec.num_classes < MIN_CLASSES or row.n < MIN_EXAMPLES:
            continue
        if row.shift in ADVERSARIALLY_FILTERED:
            continue
        view = by_setting.get((row.model, f"{spec.id_reference}@{row.shift}"))
        ref = view or by_setting.get((row.model, spec.id_reference))
        if ref is None or metric not in ref.metrics:
            continue
        ref_chance = 1.0 / (spec.num_classes if view else spec_of(spec.id_reference).num_classes)
        chance = 1.0 / spec.num_classes
        far_above = ref.metrics[metric] >= max(ID_FACTOR * ref_chance, ID_FLOOR)
        if far_above and row.metrics[metric] <= OOD_FACTOR * chance:
            messages.append(
                f"{row.model} on {row.setting}: {metric} {row.metrics[metric]:.2%} is near chance ({chance:.2%}) while "
                f"{ref.setting} gives {ref.metrics[metric]:.2%}; the data layout or the class mapping is likely wrong "
                f"(run `shiftbench check-data {row.shift} --deep`)"
            )
    return messages
