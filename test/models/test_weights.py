"""Tests for gifnet_ros.models.weights: lookup precedence, hashing, safe loading and downloads.

Downloads go to a real HTTP server on 127.0.0.1 that serves copies of the shared checkpoint
made in pytest's temporary directory (never in the repository). Expected hashes are computed
here with hashlib, independently of the module under test.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from gifnet_ros.models import weights as w
from gifnet_ros.tools.weights import main

pytestmark = pytest.mark.shared

KNOWN = "bfc1dfef0d5b386b0c04f172daf8f6af52ba395f26dc3dd5757425fd32eb1038"
STALL_BYTES = 1 << 20  # what the stalling endpoint sends before it stops (< file size)


def sha256_of(path: Path) -> str:
    """Independent reference hash for the assertions."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text
    assert "\n" not in text
    return text


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files plus three misbehaving endpoints for one file's bytes."""

    body: bytes = b""
    release: threading.Event

    def do_GET(self) -> None:
        if self.path == "/drop/Final.model":
            # Promise the whole file, send half, hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body[: len(self.body) // 2])
            self.close_connection = True
        elif self.path == "/nolength/Final.model":
            # No Content-Length: the body ends when the connection closes (HTTP/1.0).
            self.send_response(200)
            self.end_headers()
            self.wfile.write(self.body)
            self.close_connection = True
        elif self.path == "/stall/Final.model":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body[:STALL_BYTES])
            self.release.wait(60)
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Iterator[str]:
    """Base URL of a local HTTP server with good, corrupted and truncated copies."""
    root = tmp_path_factory.mktemp("served")
    good = weights_path.read_bytes()
    (root / "Final.model").write_bytes(good)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    (root / "corrupt.model").write_bytes(bytes(flipped))
    (root / "truncated.model").write_bytes(good[: len(good) // 3])
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"body": good, "release": release})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No lookup variables from the developer's shell; cache and HOME inside tmp_path."""
    for name in ("GIFNET_WEIGHTS", "GIFNET_WEIGHTS_URL", "GIFNET_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def refused_url() -> str:
    """A 127.0.0.1 port that was just free, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/Final.model"


# ----------------------------------------------------------------------------- lookup


def test_cache_path_precedence(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert w.cache_path() == clean_env / ".cache" / "gifnet_ros" / "Final.model"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says: ignore
    assert w.cache_path() == clean_env / ".cache" / "gifnet_ros" / "Final.model"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert w.cache_path() == tmp_path / "xdg" / "gifnet_ros" / "Final.model"
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path / "mine"))
    assert w.cache_path() == tmp_path / "mine" / "Final.model"


def test_resolve_precedence(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    arg, env = tmp_path / "arg.model", tmp_path / "env.model"
    cache = tmp_path / "cache" / "Final.model"
    cache.parent.mkdir()
    for path in (arg, env, cache):
        path.write_bytes(b"x")
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(cache.parent))
    monkeypatch.setenv("GIFNET_WEIGHTS", str(env))
    assert w.resolve_weights(arg) == arg
    assert w.resolve_weights(str(arg)) == arg
    assert w.resolve_weights() == env
    assert w.locate_weights() == (env, "GIFNET_WEIGHTS")
    monkeypatch.setenv("GIFNET_WEIGHTS", "")  # empty counts as unset
    assert w.resolve_weights() == cache
    assert w.locate_weights() == (cache, "cache")
    assert w.locate_weights(arg) == (arg, "argument")


def test_missing_explicit_path_does_not_fall_through(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    env = tmp_path / "env.model"
    env.write_bytes(b"x")
    monkeypatch.setenv("GIFNET_WEIGHTS", str(env))
    missing = tmp_path / "typo.model"
    with pytest.raises(w.WeightsError) as info:
        w.resolve_weights(missing)
    text = one_line(info.value)
    assert str(missing) in text
    assert "does not exist" in text
    assert "explicitly" in text
    assert "gifnet-weights" in text


def test_missing_env_and_cache_messages(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(w.WeightsError) as info:
        w.resolve_weights()
    text = one_line(info.value)
    assert str(tmp_path / "cache" / "Final.model") in text
    assert "cache" in text
    assert "gifnet-weights" in text

    monkeypatch.setenv("GIFNET_WEIGHTS", str(tmp_path / "nope.model"))
    with pytest.raises(w.WeightsError) as info:
        w.resolve_weights()
    text = one_line(info.value)
    assert str(tmp_path / "nope.model") in text
    assert "GIFNET_WEIGHTS" in text

    with pytest.raises(w.WeightsError, match="not a regular file"):
        w.resolve_weights(tmp_path)


def test_sha256_file_matches_hashlib(tmp_path: Path, weights_path: Path):
    data = os.urandom(3 * 65536 + 7)  # several chunks and a partial one
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert w.sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert w.sha256_file(weights_path) == sha256_of(weights_path) == KNOWN
    assert w.KNOWN_SHA256 == KNOWN


# ----------------------------------------------------------------------------- loading


def test_load_state_dict_matches_direct_torch_load(weights_path: Path):
    loaded = w.load_state_dict(weights_path)
    direct = torch.load(weights_path, map_location="cpu", weights_only=True)
    assert list(loaded) == list(direct)
    assert all(torch.equal(loaded[key], direct[key]) for key in direct)
    assert all(t.device.type == "cpu" for t in loaded.values())


@pytest.fixture
def modified(tmp_path: Path, weights_path: Path) -> Path:
    """A genuine state dict (the checkpoint with one tensor changed): a 'fine-tuned' file."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1.0
    path = tmp_path / "finetuned.model"
    torch.save(state, path)
    return path


def test_wrong_hash_is_rejected(modified: Path):
    actual = sha256_of(modified)
    assert actual != KNOWN
    with pytest.raises(w.WeightsError) as info:
        w.load_state_dict(modified)
    text = one_line(info.value)
    assert str(modified) in text
    assert KNOWN[:12] in text
    assert actual[:12] in text


def test_flipped_byte_loads_in_torch_but_fails_the_hash(tmp_path: Path, weights_path: Path):
    data = bytearray(weights_path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside tensor data: torch does not notice
    path = tmp_path / "Final.model"
    path.write_bytes(bytes(data))
    torch.load(path, map_location="cpu", weights_only=True)
    with pytest.raises(w.WeightsError, match="SHA-256"):
        w.load_state_dict(path)


def test_verify_hash_false_loads_with_warning(modified: Path, weights_path: Path):
    with pytest.warns(UserWarning, match="SHA-256"):
        loaded = w.load_state_dict(modified, verify_hash=False)
    original = torch.load(weights_path, map_location="cpu", weights_only=True)
    first = next(iter(original))
    assert torch.equal(loaded[first], original[first] + 1.0)


def test_env_weights_are_used_by_load(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, weights_path: Path
):
    monkeypatch.setenv("GIFNET_WEIGHTS", str(weights_path))
    assert len(w.load_state_dict()) == len(
        torch.load(weights_path, map_location="cpu", weights_only=True)
    )


def _save(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "thing.model"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: _save(tmp, [torch.zeros(2)]), "not a state dict: it holds a list"),
        (lambda tmp: _save(tmp, torch.nn.Linear(2, 2)), "not a state dict: it pickles"),
        (lambda tmp: _save(tmp, {"model": {"w": torch.zeros(1)}, "epoch": 3}), "entry 'model'"),
        (lambda tmp: _save(tmp, {}), "not a state dict: it is empty"),
        (lambda tmp: _save(tmp, torch.zeros(3)), "not a state dict: it holds a Tensor"),
    ],
    ids=["list", "module", "nested", "empty", "tensor"],
)
def test_not_a_state_dict(tmp_path: Path, make, expected: str):
    path = make(tmp_path)
    with pytest.warns(UserWarning, match="SHA-256"), pytest.raises(w.WeightsError) as info:
        w.load_state_dict(path, verify_hash=False)
    text = one_line(info.value)
    assert str(path) in text
    assert expected in text


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_unloadable_file(tmp_path: Path, weights_path: Path, kind: str):
    data = {
        "random": os.urandom(4096),
        "truncated": weights_path.read_bytes()[:100_000],
        "empty": b"",
    }[kind]
    path = tmp_path / f"{kind}.model"
    path.write_bytes(data)
    with pytest.raises(w.WeightsError, match="SHA-256"):
        w.load_state_dict(path)
    with pytest.warns(UserWarning), pytest.raises(w.WeightsError) as info:
        w.load_state_dict(path, verify_hash=False)
    text = one_line(info.value)
    assert str(path) in text
    assert "not a loadable PyTorch checkpoint" in text


# ----------------------------------------------------------------------------- download


def test_download_good(server: str, tmp_path: Path, weights_path: Path):
    dest = tmp_path / "new" / "dir" / "Final.model"
    saved = w.download(f"{server}/Final.model", dest, progress=False)
    assert saved == dest
    assert sha256_of(dest) == sha256_of(weights_path) == KNOWN
    assert os.listdir(dest.parent) == ["Final.model"]
    assert dest.stat().st_mode & 0o777 == 0o644


def test_download_without_content_length_into_directory(server: str, tmp_path: Path):
    saved = w.download(f"{server}/nolength/Final.model", tmp_path)  # a directory as dest
    assert saved == tmp_path / "Final.model"
    assert sha256_of(saved) == KNOWN
    # A trailing slash names a directory that does not exist yet.
    saved = w.download(f"{server}/Final.model", f"{tmp_path}/sub/")
    assert saved == tmp_path / "sub" / "Final.model"
    assert sha256_of(saved) == KNOWN


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/corrupt.model", "SHA-256"),
        ("/truncated.model", "SHA-256"),
        ("/missing.model", "HTTP 404"),
        ("/drop/Final.model", "ended after"),
        (None, "cannot reach"),
    ],
    ids=["corrupt", "truncated", "404", "dropped", "refused"],
)
def test_download_failures_leave_nothing(
    server: str, tmp_path: Path, path: str | None, expected: str
):
    url = refused_url() if path is None else server + path
    dest = tmp_path / "Final.model"
    with pytest.raises(w.WeightsError) as info:
        w.download(url, dest, progress=False, timeout=10)
    text = one_line(info.value)
    assert expected in text
    assert url in text
    assert os.listdir(tmp_path) == []


def test_download_timeout(server: str, tmp_path: Path):
    with pytest.raises(w.WeightsError) as info:
        w.download(f"{server}/stall/Final.model", tmp_path / "Final.model", timeout=0.5)
    assert "timed out" in one_line(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", ["/corrupt.model", "/drop/Final.model", "/missing.model"])
def test_failed_forced_download_keeps_good_file(
    server: str, tmp_path: Path, weights_path: Path, capsys: pytest.CaptureFixture[str], path: str
):
    dest = tmp_path / "Final.model"
    shutil.copyfile(weights_path, dest)
    assert main(["--url", server + path, "--dest", str(dest), "--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert sha256_of(dest) == KNOWN
    assert os.listdir(tmp_path) == ["Final.model"]


def test_ctrl_c_removes_partial_download(server: str, tmp_path: Path):
    dest = tmp_path / "Final.model"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gifnet_ros.tools.weights",
            "--url",
            f"{server}/stall/Final.model",
            "--dest",
            str(dest),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until data has reached the temporary file, so the interrupt hits mid-body.
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(".Final.model.*.part")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "download never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- CLI


def test_cli_downloads_into_cache_from_env_url(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: str, capsys
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(cache))
    monkeypatch.setenv("GIFNET_WEIGHTS_URL", f"{server}/Final.model")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert f"{server}/Final.model" in out
    assert sha256_of(cache / "Final.model") == KNOWN
    # Now present and verified: a second run must not touch the network. A 404 URL proves it.
    assert main(["--url", f"{server}/missing.model"]) == 0
    assert "already present" in capsys.readouterr().out


def test_cli_force_redownloads(server: str, tmp_path: Path, weights_path: Path, capsys):
    dest = tmp_path / "Final.model"
    shutil.copyfile(weights_path, dest)
    before = dest.stat().st_ino
    assert main(["--url", f"{server}/Final.model", "--dest", str(dest), "--force"]) == 0
    assert "saved" in capsys.readouterr().out
    assert dest.stat().st_ino != before  # replaced by a new file
    assert sha256_of(dest) == KNOWN


def test_cli_refuses_to_overwrite_foreign_file(server: str, tmp_path: Path, capsys):
    dest = tmp_path / "Final.model"
    dest.write_bytes(b"my own checkpoint")
    assert main(["--url", f"{server}/Final.model", "--dest", str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--force" in err
    assert dest.read_bytes() == b"my own checkpoint"


def test_cli_check_good(weights_path: Path, capsys):
    assert main(["--check", "--weights", str(weights_path)]) == 0
    out = capsys.readouterr().out
    assert str(weights_path) in out
    assert "argument" in out
    assert str(weights_path.stat().st_size) in out
    assert KNOWN in out
    assert "matches" in out


@pytest.mark.parametrize("source", ["GIFNET_WEIGHTS", "cache"])
def test_cli_check_reports_source(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    weights_path: Path,
    capsys,
    source: str,
):
    if source == "cache":
        monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path / "c"))
        (tmp_path / "c").mkdir()
        shutil.copyfile(weights_path, tmp_path / "c" / "Final.model")
    else:
        monkeypatch.setenv("GIFNET_WEIGHTS", str(weights_path))
    assert main(["--check"]) == 0
    assert f"source:  {source}" in capsys.readouterr().out


def test_cli_check_bad_and_missing(modified: Path, tmp_path: Path, capsys):
    assert main(["--check", "--weights", str(modified)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out
    assert sha256_of(modified) in captured.out
    assert captured.err.count("\n") == 1
    assert str(modified) in captured.err

    missing = tmp_path / "absent.model"
    assert main(["--check", "--weights", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert str(missing) in captured.err
    assert "does not exist" in captured.err


@pytest.mark.parametrize(
    "argv", [["--check", "--url", "http://x"], ["--check", "--force"], ["--weights", "x"], ["-z"]]
)
def test_cli_usage_errors(argv: list[str], capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_help_explains_precedence_and_origin(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for fact in ("authors", "AWCXV/GIFNet", w.DEFAULT_URL, "GIFNET_WEIGHTS", "cache", KNOWN):
        assert fact in out
    assert out.index("GIFNET_WEIGHTS") < out.index("the cache file")


def test_console_script_check(weights_path: Path):
    script = Path(sys.executable).with_name("gifnet-weights")
    if not script.exists():
        found = shutil.which("gifnet-weights")
        if found is None:
            pytest.skip("gifnet-weights console script is not installed")
        script = Path(found)
    result = subprocess.run(
        [str(script), "--check", "--weights", str(weights_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "matches" in result.stdout
    assert str(weights_path) in result.stdout
