"""`gifnet-weights` (`ros2 run gifnet_ros weights`): check or fetch the GIFNet checkpoint;
gifnet_ros.models.weights finds, verifies and downloads it."""

from __future__ import annotations

import argparse
import sys

from gifnet_ros.models.weights import (
    DEFAULT_URL,
    ENV_CACHE_DIR,
    ENV_URL,
    ENV_WEIGHTS,
    FILE_NAME,
    KNOWN_SHA256,
    WeightsError,
    cache_path,
    command,
    default_url,
    describe_source,
    download,
    download_target,
    locate_weights,
    resolve_weights,
    sha256_file,
    short_digest,
)


def _check(weights: str | None) -> int:
    """``--check``: report where the weights are found and whether they are the known file."""
    chosen, source = locate_weights(weights)
    resolved = resolve_weights(weights)
    size = resolved.stat().st_size
    actual = sha256_file(resolved)
    print(f"weights: {resolved}")
    print(f"source:  {source}")
    print(f"size:    {size} bytes ({size / 2**20:.1f} MiB)")
    if actual == KNOWN_SHA256:
        print(f"sha256:  {actual} (matches the authors' {FILE_NAME})")
        return 0
    print(f"sha256:  {actual} (MISMATCH, expected {KNOWN_SHA256})")
    print(
        f"error: {describe_source(chosen, source)} is not the authors' {FILE_NAME} "
        f"(SHA-256 {short_digest(actual)}); re-download it with `{command()} --force`",
        file=sys.stderr,
    )
    return 1


def _fetch(url: str | None, dest: str | None, force: bool) -> int:
    """Default action: make sure a verified checkpoint is at ``dest`` (or in the cache)."""
    target = download_target(dest)
    if target.is_file() and not force:
        if sha256_file(target) == KNOWN_SHA256:
            print(f"{target} is already present and verified; nothing to do (--force re-downloads)")
            return 0
        print(
            f"error: {target} exists but is not the authors' {FILE_NAME} (SHA-256 mismatch); "
            "use --force to replace it",
            file=sys.stderr,
        )
        return 1
    source_url = url or default_url()
    print(f"downloading {source_url}")
    saved = download(source_url, target)
    print(f"saved {saved} ({saved.stat().st_size} bytes, SHA-256 verified)")
    return 0


def _parser() -> argparse.ArgumentParser:
    name = command()
    parser = argparse.ArgumentParser(
        prog=name,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Download or check the GIFNet checkpoint (Final.model).\n\n"
            "The checkpoint is the work of the GIFNet authors and is not shipped with\n"
            "gifnet_ros; this command downloads it from the authors' public GitHub repository\n"
            f"(AWCXV/GIFNet, model/Final.model):\n  {DEFAULT_URL}\n"
            f"and accepts it only if its SHA-256 is {KNOWN_SHA256}.\n\n"
            "Where gifnet_ros looks for the weights (first match wins):\n"
            "  1. a path given explicitly (--weights here, weights parameter of the tools/node)\n"
            f"  2. the environment variable {ENV_WEIGHTS}\n"
            f"  3. the cache file, now {cache_path()}\n"
            f"     (${ENV_CACHE_DIR}, else $XDG_CACHE_HOME/gifnet_ros, else ~/.cache/gifnet_ros)"
        ),
        epilog=(
            "examples:\n"
            f"  {name}\n      download into the cache (skipped if verified)\n"
            f"  {name} --check\n      show which file would be used and verify it\n"
            f"  {name} --dest ./w.model --url http://mirror.local/Final.model"
        ),
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not download; report where the weights are found, their size and whether "
        "the SHA-256 matches (exit 0 if good, 1 otherwise)",
    )
    parser.add_argument(
        "--weights", metavar="PATH", help="with --check: check this file instead of the lookup"
    )
    parser.add_argument(
        "--url",
        help=f"download from this URL instead (default: ${ENV_URL} or the authors' URL); "
        "the file must still have the known SHA-256",
    )
    parser.add_argument(
        "--dest", metavar="PATH", help="save here instead of the cache file (file or directory)"
    )
    parser.add_argument(
        "--force", action="store_true", help="download even if the destination already exists"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script ``gifnet-weights`` (ROS: ``weights``); returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.check and (args.url or args.dest or args.force):
        parser.error("--check does not download: it cannot be combined with --url/--dest/--force")
    if args.weights and not args.check:
        parser.error("--weights only applies to --check (use --dest to choose where to download)")
    try:
        if args.check:
            return _check(args.weights)
        return _fetch(args.url, args.dest, args.force)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. an unreadable file found by --check
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
