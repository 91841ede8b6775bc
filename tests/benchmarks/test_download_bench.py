"""Download throughput: ``shifts.download.fetch`` (Range-capable, hashing as it writes, progress)
against the plainest possible copy of the same bytes from the same local server (urllib read
into a file, no hashing), in the same run. The ratio is recorded in ``extra_info``, never asserted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
import urllib.request
from pathlib import Path

from shifts.download import fetch

_spec = importlib.util.spec_from_file_location("local_http", Path(__file__).parents[1] / "shifts" / "local_http.py")
local_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_http)

SIZE = 64 << 20


def _plain_copy(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url) as resp, open(dest, "wb") as out:
        while chunk := resp.read(1 << 20):
            out.write(chunk)


def test_fetch_throughput_against_a_plain_copy(benchmark, tmp_path):
    import torch

    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    with local_http.LocalServer() as server:
        url = server.serve("/bench.bin", data)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            _plain_copy(url, tmp_path / "plain.bin")
            best = min(best, time.perf_counter() - t)

        def one():
            dest = tmp_path / "fetched.bin"
            dest.unlink(missing_ok=True)
            return fetch(url, dest, digest, SIZE, progress=False)

        assert benchmark.pedantic(one, rounds=3, iterations=1) == digest
    ours = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "bytes": SIZE,
        "plain_copy_s": best,
        "fetch_s": ours,
        "fetch_vs_plain_copy": best / ours,  # 1.0: verification and progress cost nothing extra
        "fetch_MiB_per_s": SIZE / ours / 2**20,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    })
