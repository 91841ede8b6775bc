"""Put a shift's archive where the shift looks for it: download or take a given file, verify,
extract into a staging folder, move the finished folder into place, then check the data.

Nothing is written where a shift looks until the archive is verified and fully extracted:
extraction happens under ``<data root>/.shiftbench-partial/`` (which no shift reads) and the
finished folder is renamed into place in one step, so an interrupted or refused download never
leaves half a dataset for ``check-data`` or a run to mistake for data. A refused install also
removes the folders it made (the data root itself, if it was new): it changes nothing.

Commands installing one shift into one data root take turns: each holds the shift's lock
(``<data root>/.shiftbench-locks/<shift>.lock``, removed as it lets go) from its download to
its install, so two never write one ``.part`` file or remove each other's staging folder.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.files import (
    atomic_write_text,
    check_output,
    file_lock,
    missing_folders,
    remove_empty_folders,
)
from shifts.download import (
    ChecksumMismatch,
    DownloadError,
    Progress,
    check_space,
    fetch,
    remove_tree,
    safe_extract,
    sha256_file,
)
from shifts.sources import IMAGENET_MD5, OBJECTNET_PASSWORD, Archive

PARTIAL = ".shiftbench-partial"
DOWNLOADS = ".shiftbench-downloads"
LEDGER = ".shiftbench/downloads.json"
LOCKS = ".shiftbench-locks"


@dataclass
class Installed:
    shift: str
    path: Path
    sha256: str
    verified_by: str  # "published", "recorded" or "recorded now"


def _ledger(root: Path) -> dict:
    path = root / LEDGER
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); fix or delete it") from None
    return data if isinstance(data, dict) else {}


def record_digest(root: Path, filename: str, sha256: str, source: str) -> None:
    """Remember the digest of an archive whose source publishes none (checked on later downloads)."""
    path = root / LEDGER
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _ledger(root)
    data[filename] = {"sha256": sha256, "source": source, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def expected_digest(root: Path, archive: Archive) -> tuple[str | None, str]:
    """The sha256 an archive must have and where it comes from ("published" or "recorded")."""
    if archive.sha256:
        return archive.sha256, "published"
    entry = _ledger(root).get(archive.filename)
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
        return entry["sha256"], "recorded"
    return None, "none"


def check_root(root: Path) -> None:
    """A data root that is a file is refused before anything is written."""
    check_output(root, "--data-root", folder=True)


def _made(root: Path, *paths: Path) -> list[Path]:
    """The folders writing ``paths`` under ``root`` creates, deepest first (what a refusal removes)."""
    return sorted({f for p in paths for f in missing_folders(p)}, key=lambda f: len(f.parts), reverse=True)


def check_target_free(root: Path, archive: Archive) -> Path:
    target = root / archive.target
    if target.exists():
        raise ValueError(
            f"{target} already exists but is not a complete {archive.shift} (see `shiftbench check-data "
            f"{archive.shift} --data-root {root}`); move it aside and rerun, nothing was changed"
        )
    return target


@contextlib.contextmanager
def shift_lock(root: Path, shift: str, wait: bool = True) -> Iterator[bool]:
    """Hold ``shift``'s install lock under ``root``; yields whether another command held it first.

    ``wait``: say whose lock it waits for, then wait; otherwise refuse at once, naming the lock.
    The lock file and the folders made for it are gone once it is let go."""
    path = root / LOCKS / f"{shift}.lock"
    made = missing_folders(path)
    try:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(file_lock(path, wait=False, remove=True))
                waited = False
            except BlockingIOError:
                if not wait:
                    raise ValueError(
                        f"{shift}: another shiftbench command is installing it into {root} (it holds "
                        f"{path}); let it finish, then rerun"
                    ) from None
                print(f"{shift}: waiting for {path}, held by another shiftbench command installing it "
                      f"into {root}", file=sys.stderr, flush=True)
                held.enter_context(file_lock(path, remove=True))
                waited = True
            yield waited
    finally:
        remove_empty_folders([path.parent.absolute(), *made])  # the last lock out removes the folder


def obtain(
    root: Path,
    archive: Archive,
    *,
    given: Path | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> tuple[Path, str, str]:
    """The verified archive file, its sha256 and how it was verified."""
    expected, how = expected_digest(root, archive)
    hint = (
        f" (no checksum is published for {archive.filename}: the expected digest is the one recorded at "
        f"your first download in {root / LEDGER}; if its server re-packs the archive, remove that entry "
        "to accept this copy)"
        if how == "recorded"
        else ""
    )
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise FileNotFoundError(f"--archive {given}: no such file")
        digest = file_digest(given, "sha256", progress)
        if expected is not None and digest != expected:
            raise DownloadError(
                f"{given}: sha256 {digest} does not match the {how} {expected} for {archive.filename} "
                f"({archive.source}); it is not the published archive, nothing was extracted{hint}"
            )
        return given, digest, how
    urls = [mirror.rstrip("/") + "/" + archive.filename] if mirror else list(archive.urls)
    dest = root / DOWNLOADS / archive.filename
    if expected is not None and dest.is_file():  # verified by a download whose extraction was interrupted
        if file_digest(dest, "sha256", progress) == expected:
            print(f"{archive.filename}: using the copy downloaded before ({dest})", file=sys.stderr)
            return dest, expected, how
        dest.unlink()
    errors = []
    for url in urls:
        print(f"downloading {archive.filename} from {url}", file=sys.stderr)
        try:
            digest = fetch(url, dest, expected, archive.size, size_exact=archive.size_exact, progress=progress)
            return dest, digest, how
        except DownloadError as exc:
            errors.append(str(exc) + (hint if isinstance(exc, ChecksumMismatch) else ""))
            if len(urls) > 1:
                print(f"  {exc}", file=sys.stderr)
    raise DownloadError(errors[0] if len(errors) == 1 else "no source worked:\n  " + "\n  ".join(errors))


def install(root: Path, archive: Archive, archive_file: Path, password: str | None = None, progress: bool = True) -> Path:
    """Extract a verified archive into staging and move its dataset folder to ``archive.target``."""
    target = check_target_free(root, archive)
    staging = root / PARTIAL / archive.shift
    made = _made(root, target, staging)
    remove_tree(staging)  # left by an interrupted earlier attempt: ours to remove
    installed = False
    try:
        staging.mkdir(parents=True)  # at once: another shift's command removes an empty parent
        check_space(staging.parent, Path(archive_file).stat().st_size)  # images barely compress
        safe_extract(archive_file, staging, password, progress)
        content = staging / archive.top if archive.top else staging
        if not content.is_dir():
            found = ", ".join(sorted(p.name for p in staging.iterdir())[:5]) or "nothing"
            raise DownloadError(
                f"{archive_file}: expected the top-level folder {archive.top!r} (the published "
                f"{archive.filename}'s layout), found {found}; not installed"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        content.rename(target)
        installed = True
    finally:
        _clear(root, staging)
        if not installed:
            remove_empty_folders(made)
    return target


def file_digest(path: Path, algorithm: str = "sha256", progress: bool = True) -> str:
    """A large file's digest, with a progress line."""
    bar = Progress(f"checking {path.name}", path.stat().st_size, enabled=progress)
    digest = sha256_file(path, bar.update, algorithm)
    bar.close()
    return digest


def _clear(root: Path, staging: Path) -> None:
    remove_tree(staging)
    try:
        (root / PARTIAL).rmdir()
    except OSError:
        pass  # another shift's staging is in use


def prepare_imagenet(root: Path, val_tar: Path, devkit: Path, progress: bool = True) -> Path:
    """Lay out ImageNet val as ``imagenet/val/ILSVRC2012_val_*.JPEG`` (flat, as in the tar) with
    the devkit at ``imagenet/ILSVRC2012_devkit_t12/``: the reader labels each image from the
    devkit's ground truth and ``meta.mat``. Both archives are checked against torchvision's MD5s.
    Refused at once while another command prepares ImageNet into ``root``."""
    check_root(root)
    with shift_lock(root, "imagenet", wait=False):
        return _prepare_imagenet(root, val_tar, devkit, progress)


def _prepare_imagenet(root: Path, val_tar: Path, devkit: Path, progress: bool) -> Path:
    base = root / "imagenet"
    targets = (base / "val", base / "ILSVRC2012_devkit_t12")
    for t in targets:  # the cheap checks first: hashing the val tar takes minutes
        if t.exists():
            raise ValueError(f"{t} already exists; move it aside and rerun, nothing was changed")
    for kind, path in (("val", val_tar), ("devkit", devkit)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{'val-tar' if kind == 'val' else kind} {path}: no such file")
    for kind, path in (("val", val_tar), ("devkit", devkit)):
        name, md5 = IMAGENET_MD5[kind]
        got = file_digest(Path(path), "md5", progress)
        if got != md5:
            raise DownloadError(
                f"{path}: MD5 {got} is not the published {md5} of {name} (torchvision's ImageNet "
                "ARCHIVE_META); it is not the official archive, nothing was extracted"
            )
    staging = root / PARTIAL / "imagenet"
    made = _made(root, *targets, staging)
    remove_tree(staging)
    installed = False
    try:
        safe_extract(Path(devkit), staging / "devkit", progress=progress)  # small: checked before the val tar
        kit = staging / "devkit" / "ILSVRC2012_devkit_t12"
        for f in ("data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt"):
            if not (kit / f).is_file():
                raise DownloadError(f"{devkit}: ILSVRC2012_devkit_t12/{f} is missing; not the ILSVRC2012 devkit")
        safe_extract(Path(val_tar), staging / "val", progress=progress)
        if any(p.is_dir() for p in (staging / "val").iterdir()):
            raise DownloadError(f"{val_tar}: holds folders; ILSVRC2012_img_val.tar holds 50,000 JPEG files and nothing else")
        base.mkdir(parents=True, exist_ok=True)
        kit.rename(targets[1])
        (staging / "val").rename(targets[0])
        installed = True
    finally:
        _clear(root, staging)
        if not installed:
            remove_empty_folders(made)
    return targets[0]


OBJECTNET_ARCHIVE = Archive(
    "objectnet",
    "objectnet-1.0.zip",
    (),
    None,
    None,
    "objectnet.dev (licence-gated download; no checksum published)",
    "objectnet-1.0",
    "objectnet-1.0",
)


def prepare_objectnet(root: Path, zip_path: Path, password: str | None = None, progress: bool = True) -> tuple[Path, str, str]:
    """Extract ``objectnet-1.0.zip`` (password-protected) to ``objectnet-1.0/``; no checksum is
    published, so the zip's sha256 is recorded the first time and held to afterwards. Refused
    at once while another command prepares ObjectNet into ``root``."""
    check_root(root)
    with shift_lock(root, OBJECTNET_ARCHIVE.shift, wait=False):
        return _prepare_objectnet(root, zip_path, password, progress)


def _prepare_objectnet(root: Path, zip_path: Path, password: str | None, progress: bool) -> tuple[Path, str, str]:
    if not Path(zip_path).is_file():
        raise FileNotFoundError(f"--zip {zip_path}: no such file; give the objectnet-1.0.zip you downloaded")
    check_target_free(root, OBJECTNET_ARCHIVE)
    given, digest, how = obtain(root, OBJECTNET_ARCHIVE, given=zip_path, progress=progress)
    path = install(root, OBJECTNET_ARCHIVE, given, password or OBJECTNET_PASSWORD, progress)
    if how == "none":
        record_digest(root, OBJECTNET_ARCHIVE.filename, digest, str(zip_path))
    return path, digest, how
