"""A shift declared the way a third-party package declares one: its own module plus an entry
point (here registered by its ``module:attr`` target, exactly what the entry point holds). The
report knows nothing of it; the ID setting its results name is enough to place them."""

from harness.api import ShiftSpec
from shifts.imagenet_shifts import ImageNetV2


class RetakenImageNet(ImageNetV2):
    """New photos of ImageNet's classes in ImageNetV2's layout (here: the top-images fixture)."""

    spec = ShiftSpec(
        name="imagenet-retaken",
        version="1",
        family="imagenet",
        label_space="imagenet-1k",
        num_classes=1000,
        expected_size=1000,
        id_reference="imagenet",
        protocol={"labels": "int(folder)"},
    )
    variant = "retaken"
    spellings = ("top-images",)
