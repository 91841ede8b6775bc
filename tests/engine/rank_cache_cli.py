"""``run_cli.py`` with a decoded-image cache of each rank's own: ``$RANK_CACHE_ROOT/rank<RANK>``."""

import os
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sys.argv[1:], "--cache-dir", os.path.join(os.environ["RANK_CACHE_ROOT"], f"rank{os.environ['RANK']}")]
    runpy.run_path(str(Path(__file__).parent / "run_cli.py"), run_name="__main__")
