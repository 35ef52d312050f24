"""Find, verify and download the GIFNet checkpoint published by the GIFNet authors.

The checkpoint (``Final.model``) belongs to the GIFNet authors and this project may not
redistribute it, so every user fetches it from the authors' public GitHub repository
(AWCXV/GIFNet, ``model/Final.model``) with the ``gifnet-weights`` command (``ros2 run
gifnet_ros weights`` in a ROS workspace, see :func:`command`). The file is pinned
by SHA-256: a truncated or altered file can still unpickle into plausible tensors (a flipped
byte inside the tensor data loads without complaint), and only the hash catches that.

Where the weights are looked up, first match wins:

1. a path given explicitly (function argument, ``--weights``, a node parameter);
2. the environment variable ``GIFNET_WEIGHTS``;
3. the per-user cache file, see :func:`cache_path`.

This module imports torch but nothing from ROS, so the offline tools and tests can use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch

KNOWN_SHA256 = "bfc1dfef0d5b386b0c04f172daf8f6af52ba395f26dc3dd5757425fd32eb1038"
DEFAULT_URL = "https://raw.githubusercontent.com/AWCXV/GIFNet/main/model/Final.model"
FILE_NAME = "Final.model"

ENV_WEIGHTS = "GIFNET_WEIGHTS"
ENV_URL = "GIFNET_WEIGHTS_URL"
ENV_CACHE_DIR = "GIFNET_CACHE_DIR"

SOURCE_ARGUMENT = "argument"
SOURCE_ENV = ENV_WEIGHTS
SOURCE_CACHE = "cache"

_CHUNK = 1 << 16
_HASH_PREFIX = 12
ROS_PACKAGE = "gifnet_ros"
ROS_EXECUTABLE = "weights"
"""This tool's name for ``ros2 run`` (installed in ``<prefix>/lib/gifnet_ros``, off PATH)."""
CONSOLE_SCRIPT = "gifnet-weights"
"""This tool's name on PATH in a plain (pip) install."""


def command() -> str:
    """The command that runs this tool from where the running program was started.

    Under ROS (``ros2 run``, ``ros2 launch``) programs run from ``<prefix>/lib/gifnet_ros``,
    which is not on PATH, and this tool is next to them as :data:`ROS_EXECUTABLE`: it is then
    ``ros2 run gifnet_ros weights``. Anywhere else (a venv's console scripts, ``python -m``)
    it is the console script :data:`CONSOLE_SCRIPT`.
    """
    folder = Path(sys.argv[0]).parent if sys.argv and sys.argv[0] else None
    if folder is not None and folder.name == ROS_PACKAGE and (folder / ROS_EXECUTABLE).is_file():
        return f"ros2 run {ROS_PACKAGE} {ROS_EXECUTABLE}"
    return CONSOLE_SCRIPT


def _get_it() -> str:
    return f"run `{command()}` to download the authors' checkpoint into the cache"


class WeightsError(Exception):
    """A checkpoint that is missing, unreadable, not a state dict or not the expected file.

    The message is always one line naming the file (or URL) and the problem, so a node can log
    it and a command-line tool can print it as its only error line.
    """


def _env(name: str) -> str | None:
    """Environment variable, with an empty value treated as unset (``VAR= cmd`` clears it)."""
    value = os.environ.get(name, "").strip()
    return value or None


def short_digest(digest: str) -> str:
    """Hash prefix long enough to tell files apart, short enough for a one-line message."""
    return digest[:_HASH_PREFIX] + "..."


def default_url() -> str:
    """Download URL: ``$GIFNET_WEIGHTS_URL`` (a mirror, e.g. behind a firewall) or the authors'."""
    return _env(ENV_URL) or DEFAULT_URL


def cache_path() -> Path:
    """Per-user cache file for the checkpoint.

    ``$GIFNET_CACHE_DIR`` wins (shared installs, containers), then ``$XDG_CACHE_HOME/gifnet_ros``
    and finally ``~/.cache/gifnet_ros``. A relative ``XDG_CACHE_HOME`` is ignored, as the XDG
    base directory specification requires.
    """
    override = _env(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser() / FILE_NAME
    xdg = _env("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "gifnet_ros" / FILE_NAME


def locate_weights(path: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The checkpoint path that the precedence rules choose and which source chose it.

    The path is not checked for existence: ``gifnet-weights --check`` reports a missing file
    together with its source. The source is ``"argument"``, ``"GIFNET_WEIGHTS"`` or ``"cache"``.
    """
    if path is not None and str(path).strip():
        return Path(path).expanduser(), SOURCE_ARGUMENT
    env = _env(ENV_WEIGHTS)
    if env:
        return Path(env).expanduser(), SOURCE_ENV
    return cache_path(), SOURCE_CACHE


def describe_source(path: Path, source: str) -> str:
    """The weights file and where it was found, for messages: ``weights file X (from $...)``."""
    if source == SOURCE_ARGUMENT:
        return f"weights file {path} (given explicitly)"
    if source == SOURCE_ENV:
        return f"weights file {path} (from ${ENV_WEIGHTS})"
    return f"cached weights file {path}"


def resolve_weights(path: str | os.PathLike[str] | None = None) -> Path:
    """The existing checkpoint file: explicit ``path`` > ``$GIFNET_WEIGHTS`` > cache file.

    A chosen path that does not exist is an error rather than a reason to try the next source:
    silently using a different file than the one the user named would hide a typo.
    """
    chosen, source = locate_weights(path)
    if chosen.is_file():
        return chosen
    problem = "is not a regular file" if chosen.exists() else "does not exist"
    if source == SOURCE_ARGUMENT:
        hint = f"pass the path of the authors' {FILE_NAME}, or omit it and {_get_it()}"
    elif source == SOURCE_ENV:
        hint = f"point ${ENV_WEIGHTS} at the authors' {FILE_NAME}, or unset it and {_get_it()}"
    else:
        hint = f"{_get_it()}, or set ${ENV_WEIGHTS} to a copy you already have"
    raise WeightsError(f"{describe_source(chosen, source)} {problem}; {hint}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so large fine-tuned checkpoints need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def torch_load_failure(exc: BaseException) -> tuple[bool, str]:
    """(refused a pickled Python object?, one-line reason) from a ``torch.load`` exception.

    torch's messages span many lines of advice about ``weights_only=False`` that we must not
    follow for a downloaded file; keep only the part that names what went wrong.
    """
    text = str(exc)
    refused = re.search(r"GLOBAL\s+([\w.]+)", text)
    if refused:
        return True, f"it pickles the Python object {refused.group(1)}"
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if detail:
        return False, f"unpickling failed: {detail.group(1).strip()}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        return False, f"{type(exc).__name__} (empty or truncated file?)"
    return False, first[:160]


def load_state_dict(
    path: str | os.PathLike[str] | None = None, verify_hash: bool = True
) -> dict[str, torch.Tensor]:
    """Resolve, verify and safely load the checkpoint as a CPU state dict.

    ``verify_hash=False`` is for the user's own fine-tuned checkpoints: a different hash then
    only warns. Loading always uses ``weights_only=True``, which refuses arbitrary pickled code,
    so a whole pickled ``nn.Module`` is rejected as "not a state dict". Whether the tensors fit
    the network is checked by the network when it loads them.
    """
    resolved = resolve_weights(path)
    # Hash and unpickle the same bytes, so the file cannot change between the two steps.
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {resolved}: {exc.strerror or exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != KNOWN_SHA256:
        message = (
            f"weights file {resolved} has SHA-256 {short_digest(actual)}, expected "
            f"{short_digest(KNOWN_SHA256)} (the authors' {FILE_NAME})"
        )
        if verify_hash:
            raise WeightsError(
                f"{message}; re-download it with `{command()} --force` "
                "or disable hash verification for your own checkpoint"
            )
        warnings.warn(f"{message}; loading it anyway (hash verification disabled)", stacklevel=2)

    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        refused, reason = torch_load_failure(exc)
        if refused:
            raise WeightsError(
                f"weights file {resolved} is not a state dict: {reason}, which safe loading "
                "refuses; save model.state_dict() instead of the model"
            ) from exc
        raise WeightsError(
            f"weights file {resolved} is not a loadable PyTorch checkpoint: {reason}"
        ) from exc

    if not isinstance(loaded, Mapping):
        raise WeightsError(
            f"weights file {resolved} is not a state dict: it holds a {type(loaded).__name__}, "
            "not a mapping of parameter names to tensors"
        )
    bad = next(
        (
            (key, value)
            for key, value in loaded.items()
            if not isinstance(key, str) or not isinstance(value, torch.Tensor)
        ),
        None,
    )
    if bad is not None:
        raise WeightsError(
            f"weights file {resolved} is not a state dict: entry {bad[0]!r} is a "
            f"{type(bad[1]).__name__}, not a tensor"
        )
    if not loaded:
        raise WeightsError(f"weights file {resolved} is not a state dict: it is empty")
    return dict(loaded)


def _receive(response: http.client.HTTPResponse, handle: BinaryIO, url: str, progress: bool) -> str:
    """Stream the response body into ``handle``; return its SHA-256, hashed on the way in."""
    # Imported here: loading weights (the engine on a bare GPU machine) needs no progress bar.
    from tqdm import tqdm

    digest = hashlib.sha256()
    length_header = response.headers.get("Content-Length")
    expected = int(length_header) if length_header and length_header.isdigit() else None
    received = 0
    with tqdm(
        total=expected,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=FILE_NAME,
        disable=None if progress else True,  # None: tqdm turns itself off when not a TTY
    ) as bar:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            handle.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    # http.client returns b"" instead of raising when the server closes the connection
    # before Content-Length bytes arrived, so count them ourselves.
    if expected is not None and received != expected:
        raise WeightsError(
            f"download from {url} ended after {received} of {expected} bytes (connection dropped)"
        )
    return digest.hexdigest()


def download_target(dest: str | os.PathLike[str] | None) -> Path:
    """Download target: ``dest`` (a directory gets ``Final.model`` inside) or the cache file."""
    if dest is None or not str(dest).strip():
        return cache_path()
    target = Path(dest).expanduser()
    # "dir/" names a directory even before it exists; Path() would drop the slash.
    named_dir = str(dest).endswith(("/", os.sep))
    return target / FILE_NAME if named_dir or target.is_dir() else target


def download(
    url: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    expected_sha256: str = KNOWN_SHA256,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download the checkpoint to ``dest`` (default: the cache file) and return that path.

    ``url`` defaults to :func:`default_url` (``$GIFNET_WEIGHTS_URL`` or the authors' GitHub
    file). The body is streamed into a temporary file next to ``dest`` and moved into place with
    an atomic ``os.replace`` only after its SHA-256 matched, so an interrupted or corrupted
    download never leaves a partial file at ``dest`` and never damages a good one already there.
    The temporary file is removed on every failure, Ctrl-C included.
    """
    url = url or default_url()
    target = download_target(dest)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise WeightsError(f"cannot write into {target.parent}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    actual = _receive(response, handle, url, progress)
            except urllib.error.HTTPError as exc:
                raise WeightsError(
                    f"download failed: HTTP {exc.code} {exc.reason} for {url}"
                ) from exc
            except urllib.error.URLError as exc:
                raise WeightsError(f"download failed: cannot reach {url}: {exc.reason}") from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # Timeouts, resets and IncompleteRead mid-body; ValueError for a malformed URL.
                reason = str(exc) or type(exc).__name__
                raise WeightsError(f"download failed from {url}: {reason}") from exc
            handle.flush()
            os.fsync(handle.fileno())
        if actual != expected_sha256.lower():
            raise WeightsError(
                f"download from {url} has SHA-256 {short_digest(actual)}, expected "
                f"{short_digest(expected_sha256)}; not saved to {target}"
            )
        # mkstemp creates 0600; the weights are not secret and a --dest in a shared directory
        # must be readable by the other users of the robot.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return target
