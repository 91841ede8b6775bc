"""Run ``shiftbench`` in its own process with one catalogue entry held to a fixture archive
(for tests of two processes at once): ``download_cli.py SHIFT SHA256 SIZE IMAGES -- ARGS...``.

The digest and size are the fixture archive's, and the shift's expected image count the
fixture's, as the in-process tests set them; everything else is the real command."""

import dataclasses
import sys

from harness.cli import main
from harness.registry import shifts
from shifts import sources

if __name__ == "__main__":
    shift, digest, size, images = sys.argv[1:5]
    assert sys.argv[5] == "--"
    sources.ARCHIVES[shift] = dataclasses.replace(sources.ARCHIVES[shift], sha256=digest, size=int(size))
    cls = shifts.get(shift)
    cls.spec = dataclasses.replace(cls.spec, expected_size=int(images))
    cls.per_class = None
    raise SystemExit(main(sys.argv[6:]))
