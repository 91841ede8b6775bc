"""The site in a real headless browser (Debian's chromium): no console errors, every sortable
header sorts both ways exactly as the entries' values say, and every image renders.

Install: apt-get install -y chromium. Without it these tests skip, unless
SHIFTBENCH_REQUIRE_BROWSER=1 (set in CI), which turns a missing browser into a failure.
"""

import html
import json
import os
import re
import shutil
import subprocess

import leaderboard_toy as toy
import pytest
from test_site import make_folder

from reports.leaderboard import build_leaderboard
from reports.leaderboard.html import method_text

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None and os.environ.get("SHIFTBENCH_REQUIRE_BROWSER") != "1":
    pytest.skip("chromium not installed (apt-get install -y chromium)", allow_module_level=True)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def load(page, profile):
    """(DOM after load, console messages) of ``page`` opened with ?selftest."""
    assert CHROMIUM, "chromium is required here (apt-get install -y chromium)"
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", f"{page.as_uri()}?selftest"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def selftest(dom):
    m = re.search(r'<pre id="selftest"[^>]*data-done="1"[^>]*>(.*?)</pre>', dom, re.S)
    assert m, "the page's script did not run (see console messages)"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    subs, baseline = make_folder(root)
    board = build_leaderboard(
        subs,
        root / "site",
        required=toy.SUITE,
        baselines=[baseline],
        get_shift=toy.get_shift,
        progress=False,
        trust_labels=True,
    )
    return root, root / "site", board


def test_console_errors_are_detected(tmp_path):
    """The check itself can fail: a broken page yields console lines and no self-test output."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!doctype html><html><body><pre id="selftest"></pre><script>undefinedFn();</script></body></html>'
    )
    dom, console = load(page, tmp_path / "profile")
    assert any("Uncaught ReferenceError: undefinedFn is not defined" in c for c in console)
    assert 'data-done="1"' not in dom


def column_values(e, key):
    """What each sortable column holds, from the entry itself (None = missing, sorted last)."""
    if key == "rank_er":
        return e.rank_er
    if key == "rank_ood":
        return e.rank_ood
    if key == "model":
        return e.card["name"].lower()
    if key == "method":
        return method_text(e.card).lower()
    if key == "extra_data":
        return "yes" if e.card.get("extra_data") else "no"
    if key in ("avg_er", "avg_ood"):
        return getattr(e, key)
    kind, shift = key.split(":", 1)
    return e.id_scores[shift][0] if kind == "id" else e.points[shift].y


def sort_ids(order, entries, key, descending):
    by_id = {e.id: e for e in entries}
    present = [i for i in order if column_values(by_id[i], key) is not None]
    missing = [i for i in order if column_values(by_id[i], key) is None]
    return sorted(present, key=lambda i: column_values(by_id[i], key), reverse=descending) + missing


ASCENDING_FIRST = {"rank_er", "rank_ood", "model", "method", "extra_data"}


def test_index_loads_sorts_and_renders(site, tmp_path):
    _, out, board = site
    dom, console = load(out / "index.html", tmp_path / "profile")
    assert console == []
    result = selftest(dom)
    assert [t["protocol"] for t in result["tables"]] == [t.protocol for t in board.tables]
    for t, got in zip(board.tables, result["tables"], strict=True):
        order = [e.id for e in t.entries]
        assert got["initial"] == order
        keys = ["rank_er", "rank_ood", "model", "method", "extra_data", "avg_er", "avg_ood"]
        keys += [f"id:{s}" for s in t.id_shifts] + [f"ood:{s}" for s in t.ood_shifts]
        assert list(got["clicks"]) == keys
        for key in keys:
            first_desc = key not in ASCENDING_FIRST
            first = sort_ids(order, t.entries, key, first_desc)
            second = sort_ids(first, t.entries, key, not first_desc)
            assert got["clicks"][key] == [first, second], key
            order = second
    # the two-entry table really reorders
    clicks = result["tables"][0]["clicks"]
    assert clicks["avg_ood"][0] != clicks["avg_ood"][1]
    images = result["images"]
    assert len(images) == sum(len(t.ood_shifts) for t in board.tables)
    assert all(img["complete"] and img["width"] == 500 for img in images), images


def test_entry_pages_render(site, tmp_path):
    _, out, board = site
    for e in (t.entries[0] for t in board.tables):
        dom, console = load(out / "entries" / f"{e.id}.html", tmp_path / "profile")
        assert console == []
        images = selftest(dom)["images"]
        assert len(images) == 3 and all(img["width"] == 500 for img in images), images
