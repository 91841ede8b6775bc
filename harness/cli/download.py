"""``download``, ``prepare`` and ``fetch-weights``: getting the data and the weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download public shifts from their official archives, verify, extract and check them",
        description="Download each shift's published archive (resuming an interrupted download), "
        "verify its checksum, extract it safely where the shift looks for it, then run check-data. "
        "ImageNet and ObjectNet sit behind licences: see `shiftbench prepare`.",
    )
    p.add_argument("shifts", nargs="*", metavar="SHIFT", help="e.g. imagenetv2 imagenet-r imagenet-a imagenet-sketch iwildcam")
    p.add_argument("--data-root", type=Path, help="folder holding the shifts' data (required unless --list)")
    p.add_argument("--list", action="store_true", help="list the downloadable shifts: archive, size, checksum source")
    p.add_argument("--mirror", metavar="URL", help="fetch URL/<archive file name> instead of the official URL")
    p.add_argument("--archive", type=Path, metavar="FILE", help="an archive fetched elsewhere (one shift only)")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after extraction")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")
    p.set_defaults(func=download_cmd)

    p = sub.add_parser(
        "prepare",
        help="lay out a licensed dataset you downloaded (ImageNet val, ObjectNet) where its shift looks",
    )
    what = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    q = what.add_parser("imagenet", help="ILSVRC2012_img_val.tar + devkit -> imagenet/val and the devkit")
    q.add_argument("--val-tar", required=True, type=Path, help="ILSVRC2012_img_val.tar")
    q.add_argument("--devkit", required=True, type=Path, help="ILSVRC2012_devkit_t12.tar.gz")
    q.add_argument("--data-root", required=True, type=Path)
    q.add_argument("--no-progress", dest="progress", action="store_false")
    q.set_defaults(func=prepare_imagenet_cmd)
    q = what.add_parser("objectnet", help="objectnet-1.0.zip -> objectnet-1.0/")
    q.add_argument("--zip", required=True, type=Path, help="objectnet-1.0.zip")
    q.add_argument("--password", help="zip password (default: the one objectnet.dev gives)")
    q.add_argument("--data-root", required=True, type=Path)
    q.add_argument("--no-progress", dest="progress", action="store_false")
    q.set_defaults(func=prepare_objectnet_cmd)

    p = sub.add_parser(
        "fetch-weights",
        help="download pretrained weights once, verified (OpenAI archives by sha256; Hugging Face through its cache)",
    )
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="clip:ARCH@TAG (e.g. clip:ViT-B-32@openai, clip:ViT-B-32@laion2b_s34b_b79k) or timm:NAME.TAG")
    p.add_argument("--mirror", metavar="URL", help="fetch URL/<file name> instead of a direct URL")
    p.add_argument("--hf-endpoint", metavar="URL", help="Hugging Face endpoint (default: $HF_ENDPOINT or huggingface.co)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=fetch_weights_cmd)


def _check(root: Path, shift_name: str) -> int:
    from harness.registry import get_shift
    from shifts.check import check_shift

    report = check_shift(get_shift(shift_name), root)
    print(report.summary())
    return 0 if report.complete else 2


def download_cmd(args: argparse.Namespace) -> int:
    """Every check of the plan (shifts known, targets free, ledger readable, --archive present)
    runs before the first write; a shift refused after that leaves no archive, staging folder or
    folder made for it behind (only a ``.part`` file a rerun resumes from). Each shift is
    installed holding its lock: a second command for it waits, then finds it complete."""
    from harness.cli import UserError
    from harness.files import missing_folders
    from harness.registry import get_shift
    from shifts.check import check_shift
    from shifts.install import DOWNLOADS, check_root, check_target_free, expected_digest, shift_lock
    from shifts.sources import archive_for

    if args.list:
        return list_archives()
    if not args.shifts or args.data_root is None:
        raise UserError("name the shifts to download and --data-root (or pass --list to see them)")
    if args.archive and len(args.shifts) != 1:
        raise UserError("--archive names one archive: pass exactly one shift with it")
    if args.archive and args.mirror:
        raise UserError("--archive and --mirror exclude each other")
    archives = [archive_for(s) for s in args.shifts]  # licensed or unknown shifts fail before any work
    root: Path = args.data_root
    check_root(root)
    if args.archive is not None and not args.archive.is_file():
        raise UserError(f"--archive {args.archive}: no such file; give the path of the archive you fetched")
    todo = []
    for archive in archives:
        report = check_shift(get_shift(archive.shift), root)
        if report.complete:
            print(f"{archive.shift}: already complete at {report.path}; nothing to download")
            continue
        if report.found and report.path != str(root / archive.target):
            raise UserError(
                f"{archive.shift}: incomplete data at {report.path} would be read instead of a download; "
                f"move it aside and rerun ({'; '.join(report.problems)})"
            )
        check_target_free(root, archive)
        expected_digest(root, archive)  # an unreadable ledger is refused now, not after a download
        todo.append(archive)
    made = missing_folders(root / DOWNLOADS)  # the data root and the folders above it, if new
    status = 0
    for archive in todo:
        with shift_lock(root, archive.shift) as waited:  # another command's turn first: then look again
            if waited and (report := check_shift(get_shift(archive.shift), root)).complete:
                print(f"{archive.shift}: already complete at {report.path} (installed by the command waited for)")
                continue
            status = max(status, _install_one(args, root, archive, made))
    return status


def _install_one(args: argparse.Namespace, root: Path, archive, made: list[Path]) -> int:
    """Download (or take ``--archive``), verify, install and check one shift, holding its lock."""
    from harness.cli import UserError
    from harness.files import remove_empty_folders
    from shifts.download import DownloadError
    from shifts.install import DOWNLOADS, check_target_free, install, obtain, record_digest

    path = None
    try:
        check_target_free(root, archive)  # checked before; again now that this command holds the shift
        path, digest, how = obtain(root, archive, given=args.archive, mirror=args.mirror, progress=args.progress)
        verified = {"published": f"matches the published sha256 ({archive.source})",
                    "recorded": "matches the sha256 recorded at its first download",
                    "none": f"no checksum is published ({archive.source}); recorded sha256 {digest} for later downloads"}[how]
        print(f"{archive.filename}: {verified}", file=sys.stderr)
        target = install(root, archive, path, progress=args.progress)
    except KeyboardInterrupt:  # a verified download is kept: the rerun extracts it without fetching it again
        if path is not None and args.archive is None and how == "none":
            path.unlink(missing_ok=True)  # nothing to verify it by on the rerun
        raise
    except BaseException as exc:
        if path is not None and args.archive is None:
            path.unlink(missing_ok=True)  # a refused archive is not kept
        remove_empty_folders([root / DOWNLOADS, *made])
        if isinstance(exc, DownloadError):
            raise UserError(str(exc)) from None
        raise
    if args.archive is None and not args.keep_archive:
        path.unlink(missing_ok=True)
        remove_empty_folders([root / DOWNLOADS])
    if how == "none":
        record_digest(root, archive.filename, digest, args.mirror or (str(args.archive) if args.archive else archive.urls[0]))
    print(f"{archive.shift}: extracted to {target}")
    return _check(root, archive.shift)


def list_archives() -> int:
    from shifts.sources import ARCHIVES, LICENSED

    for a in ARCHIVES.values():
        size = f"{a.size / 2**30:.1f} GiB" + ("" if a.size_exact else " (approx.)") if a.size else "size unknown"
        check = "sha256 published" if a.sha256 else "no checksum published (recorded on first download)"
        print(f"{a.shift:26} {a.filename:38} {size:18} -> {a.target}/  {check}; {a.source}")
    for name in LICENSED:
        print(f"{name:26} licensed: see `shiftbench download {name} --data-root DIR` for where to get it")
    return 0


def prepare_imagenet_cmd(args: argparse.Namespace) -> int:
    from harness.cli import UserError
    from shifts.download import DownloadError
    from shifts.install import prepare_imagenet

    try:
        path = prepare_imagenet(args.data_root, args.val_tar, args.devkit, args.progress)
    except DownloadError as exc:
        raise UserError(str(exc)) from None
    print(f"imagenet: val images at {path}, devkit at {path.parent / 'ILSVRC2012_devkit_t12'}")
    return _check(args.data_root, "imagenet")


def prepare_objectnet_cmd(args: argparse.Namespace) -> int:
    from harness.cli import UserError
    from shifts.download import DownloadError
    from shifts.install import prepare_objectnet

    try:
        path, digest, how = prepare_objectnet(args.data_root, args.zip, args.password, args.progress)
    except DownloadError as exc:
        raise UserError(str(exc)) from None
    note = "matches the sha256 recorded earlier" if how == "recorded" else f"sha256 {digest} recorded (objectnet.dev publishes none)"
    print(f"objectnet: extracted to {path}; {args.zip.name} {note}")
    return _check(args.data_root, "objectnet")


def fetch_weights_cmd(args: argparse.Namespace) -> int:
    from harness.cli import UserError
    from models.weights import fetch_weights
    from shifts.download import DownloadError

    for spec in args.models:
        try:
            got = fetch_weights(spec, mirror=args.mirror, endpoint=args.hf_endpoint, progress=args.progress)
        except DownloadError as exc:
            raise UserError(str(exc)) from None
        print(f"{spec}: {got.path} ({got.how})")
        print(f"  use: {got.usage}")
    return 0
