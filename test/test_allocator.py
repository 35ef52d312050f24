"""The engine's allocator setting: after the first pairs, a pair causes no page faults.

Each case runs in a fresh process (the setting is process-wide and made once): the network
(random weights, bf16 as the CPU default) fuses a 256×192 pair three times and the child
reports the minor page faults of the third. With the setting, the blocks the earlier pairs
freed are reused; with a malloc option of the user's in the environment the package leaves
malloc alone, and every pair faults its maps in again, which shows the count can fail.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from gifnet_ros import allocator

_CHILD = """
import json, resource, torch
from gifnet_ros.allocator import retain_freed_memory
state = retain_freed_memory()
from gifnet_ros.network import GIFNet
torch.manual_seed(0)
model = GIFNet().eval()
x = torch.rand(1, 1, 192, 256)
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    model(x, x)
    model(x, x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x, x)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"state": state, "faults": faults}))
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is made for glibc's malloc only",
)


def _third_pair(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


@glibc_only
def test_a_pair_after_the_first_causes_no_page_faults() -> None:
    result = _third_pair()
    assert result["state"] == "freed memory kept for the next pair"
    # 256×192 maps of 98 bf16 channels are 9.6 MB each: without the setting, thousands of
    # faults per pair (the next test); a few may come from Python's own small objects.
    assert result["faults"] < 100, result


@glibc_only
def test_a_users_malloc_option_is_left_alone() -> None:
    result = _third_pair(MALLOC_TOP_PAD_="131072")
    assert result["state"] == "malloc as the environment sets it"
    assert result["faults"] > 1000, result


def test_other_c_libraries_are_named_and_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in allocator._USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator._apply().startswith("system malloc (not glibc")
