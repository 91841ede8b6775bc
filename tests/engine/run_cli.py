"""Run ``shiftbench`` with the toy shifts and models registered (for subprocess tests)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from doubles import register  # noqa: E402

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    register()
    raise SystemExit(main(sys.argv[1:]))
