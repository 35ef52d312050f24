"""``gifnet-demo``: the live node, end to end, on a fresh machine.

It starts the real fusion node in its own process, plays a synchronized thermal/RGB stream into
it over DDS (by default frames of the M3SVD clip in ``../shared/data/m3svd``; or a rosbag2, or
two videos), receives the fused images, writes a few as PNG with a short report, and exits.
Everything goes through the same topics a robot would use, so a working demo means that the
node, the middleware and the model work together on this machine.

ROS domain: the demo keeps ``ROS_DOMAIN_ID`` as it is (so ``ros2 topic echo`` and rqt in the
same shell see it; pass ``--domain-id`` to move it) and puts the node and its topics under a
private namespace, ``/gifnet_demo_<pid>``, so it neither reads a robot's cameras nor publishes
into a robot's topics when run on the robot's default domain. ``FASTDDS_BUILTIN_TRANSPORTS`` is
set to ``LARGE_DATA`` unless already set: Fast DDS' default UDP transport fragments and loses
megabyte images.

The pieces it is made of serve the node tests and benchmarks too: the frame sources
(``gifnet_ros.offline.sources``), the node process (``gifnet_ros.ros.node_process``) and the DDS
client (``gifnet_ros.ros.client``). This module is the command: its flags, the run and the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from gifnet_ros.fusion.image_files import write_bytes_atomic
from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.sources import (
    PixelPair,
    bag_pairs,
    find_shared,
    m3svd_pairs,
    video_pairs,
)
from gifnet_ros.ros.client import NODE_NAME, ClientError, FusionClient
from gifnet_ros.ros.node_process import dds_environment, start_node, stop_node
from gifnet_ros.tools.arg_types import fusion_width_height

DEFAULT_CLIP = "0111_1716"


class DemoError(RuntimeError):
    """A problem the demo reports as its one error line (missing data, node failure...)."""


@dataclass(frozen=True)
class Latency:
    """Seconds from a pair's RGB stamp to its fused image's arrival (None: nothing came)."""

    median: float | None
    p95: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        if not values:
            return cls(None, None)
        return cls(round(float(np.median(values)), 4), round(float(np.percentile(values, 95)), 4))


@dataclass(frozen=True)
class NodeCounts:
    """The node's own counters over the stream (the warm-up pair not counted)."""

    pairs: int
    fused: int
    dropped: dict[str, int]  # by reason: replaced, stale, ...
    errors: dict[str, int]  # by kind, as the node's diagnostics name them
    model_median_s: str | None  # as the node's diagnostics give it


@dataclass(frozen=True)
class DemoReport:
    """What report.json holds, key for key; ``device`` to ``mode`` as the node reports them."""

    source: str
    size: str
    device: str | None
    network: str | None
    backend: str | None
    precision: str | None
    mode: str | None
    weights: str
    pairs_sent: int
    fused_received: int
    node: NodeCounts
    latency_s: Latency
    seconds: float
    images: list[str]

    def json_text(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


# ---------------------------------------------------------------------------- the demo


def demo_weights(explicit: str | None) -> tuple[str, str]:
    """Weights for the node and where they came from (the engine's rules, then ../shared)."""
    from gifnet_ros.models.weights import WeightsError, resolve_weights

    try:
        return str(resolve_weights(explicit)), "default resolution"
    except WeightsError as exc:
        shared = find_shared()
        fallback = None if shared is None else shared / "gifnet" / "weights" / "Final.model"
        if explicit is None and fallback is not None and fallback.is_file():
            return str(fallback), "shared folder (no cached or $GIFNET_WEIGHTS checkpoint)"
        raise DemoError(str(exc)) from None


def _png(rgb_or_grey: np.ndarray) -> bytes:
    pixels = rgb_or_grey if rgb_or_grey.ndim == 2 else rgb_or_grey[..., ::-1]
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise DemoError("PNG encoding failed")
    return encoded.tobytes()


def _montage(thermal: np.ndarray, rgb: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """thermal | RGB | fused side by side, all as RGB, for a quick look."""
    from gifnet_ros.fusion.thermal import normalize_thermal

    grey = normalize_thermal(thermal) if thermal.ndim == 2 else thermal
    panels = [grey if grey.ndim == 3 else np.repeat(grey[..., None], 3, axis=2), rgb, fused]
    if fused.ndim == 2:
        panels[2] = np.repeat(fused[..., None], 3, axis=2)
    return np.concatenate(panels, axis=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gifnet-demo",
        description="Start the GIFNet fusion node, stream thermal/RGB pairs into it over DDS, "
        "save a few fused images as PNG and a report, and exit.",
    )
    source = parser.add_argument_group("input (default: the shared M3SVD clip)")
    source.add_argument(
        "--clip", default=DEFAULT_CLIP, help="M3SVD clip name (default %(default)s)"
    )
    source.add_argument("--thermal-video", type=Path, help="thermal video (with --rgb-video)")
    source.add_argument("--rgb-video", type=Path, help="RGB video, frame-synchronous")
    source.add_argument("--bag", type=Path, help="rosbag2 folder or file with both topics")
    source.add_argument("--thermal-topic", default="/thermal/image", help="thermal topic in --bag")
    source.add_argument("--rgb-topic", default="/rgb/image", help="RGB topic in --bag")
    parser.add_argument("--frames", type=int, default=6, help="pairs to send (default %(default)s)")
    parser.add_argument(
        "--every", type=int, default=15, help="use every Nth video frame (default %(default)s)"
    )
    parser.add_argument(
        "--size",
        type=fusion_width_height,
        default=(160, 120),
        help="resize both images to WxH before sending (default 160x120: GIFNet at 640x480 "
        "takes tens of seconds per pair on a laptop CPU)",
    )
    parser.add_argument(
        "--native", action="store_true", help="send the images at their own size (no --size)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="send at this many pairs/s and let the node drop what it cannot follow; "
        "default 0: send the next pair when the previous one came back",
    )
    parser.add_argument("--compressed", action="store_true", help="send JPEG CompressedImage")
    parser.add_argument(
        "--backend",
        default="auto",
        help="node backend: auto, torch, onnxruntime or classic_* (no weights) "
        "(default %(default)s: by hardware)",
    )
    parser.add_argument(
        "--network",
        default="gifnet",
        help="node network: gifnet, or tim / tim_light with the weights this project trained "
        "(not the authors') (default %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="node device (default %(default)s)")
    parser.add_argument(
        "--precision", default="auto", help="node precision (default %(default)s: by hardware)"
    )
    parser.add_argument("--mode", default="thermal_rgb", help="fusion mode (default %(default)s)")
    parser.add_argument("--weights", help="checkpoint (default: gifnet-weights resolution)")
    parser.add_argument(
        "--out", type=Path, default=Path("gifnet_demo_out"), help="output folder (%(default)s)"
    )
    parser.add_argument("--save", type=int, default=4, help="fused PNGs to write (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for one fused image"
    )
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: unchanged)")
    parser.add_argument(
        "--namespace", help="namespace of the node and topics (default /gifnet_demo_<pid>)"
    )
    return parser


def _load_pairs(args: argparse.Namespace) -> tuple[list[PixelPair], str]:
    size = None if args.native else args.size
    if args.bag is not None:
        pairs = bag_pairs(args.bag, args.thermal_topic, args.rgb_topic, args.frames, size)
        return pairs, f"bag {args.bag} ({args.thermal_topic}, {args.rgb_topic})"
    if (args.thermal_video is None) != (args.rgb_video is None):
        raise DemoError("--thermal-video and --rgb-video go together")
    if args.thermal_video is not None:
        pairs = video_pairs(args.thermal_video, args.rgb_video, args.frames, size, args.every)
        return pairs, f"videos {args.thermal_video} + {args.rgb_video}"
    pairs = m3svd_pairs(args.clip, args.frames, size, args.every)
    return pairs, f"M3SVD clip {args.clip}"


def run_demo(args: argparse.Namespace) -> DemoReport:
    """Run the demo; returns the report (also written to ``args.out``)."""
    dds_environment(args.domain_id)
    if args.backend.startswith("classic_"):
        weights, weights_source = "", f"none needed by backend {args.backend}"
    elif args.network != "gifnet":
        weights, weights_source = "", f"{args.network}: this project's TIM weights"
    else:
        weights, weights_source = demo_weights(args.weights)
    print(f"weights: {weights or '-'} ({weights_source})")
    pairs, source = _load_pairs(args)
    height, width = pairs[0][1].shape[:2]
    print(f"input: {len(pairs)} pairs of {width}x{height} from {source}")
    args.out.mkdir(parents=True, exist_ok=True)
    namespace = args.namespace or f"/gifnet_demo_{os.getpid()}"
    parameters = {
        "weights": weights,
        "network": args.network,
        "backend": args.backend,
        "device": args.device,
        "precision": args.precision,
        "mode": args.mode,
        "compressed": bool(args.compressed),
        "diagnostics_period": 0.5,
        "sync.queue_size": 30,
        # The warm-up sends the first pair, and the stream starts with it again: a repeated
        # thermal frame that the default would skip as a frozen camera.
        "thermal.freeze_action": "ignore",
    }
    log_path = args.out / "node.log"
    process = start_node(namespace, parameters, log_path)
    print(f"node: {namespace}/{NODE_NAME} (pid {process.pid}), log {log_path}")
    client = None
    try:
        transports = ("compressed", "compressed") if args.compressed else ("raw", "raw")
        client = FusionClient(namespace, transports=transports)
        client.wait_for_node(120.0, process)
        print("node is up; warming up with the first pair")
        client.warm_up(pairs[0], args.timeout)
        # Counters are reported relative to the first diagnostics that include the warm-up.
        client.wait_diagnostics(lambda d: int(d.get("fused", 0)) >= 1, 10.0)
        start_counts = dict(client.diagnostics)
        stamps: list[int] = []
        started = time.monotonic()
        for index, pair in enumerate(pairs):
            stamp = client.publish_pair(pair)
            stamps.append(stamp)
            if args.rate > 0:
                time.sleep(max(0.0, started + (index + 1) / args.rate - time.monotonic()))
            elif client.wait_fused(stamp, args.timeout) is None:
                print(f"pair {index}: no fused image within {args.timeout:.0f} s")
            print(f"pair {index + 1}/{len(pairs)} sent", end="\r", flush=True)
        print()
        client.wait_diagnostics(lambda d: _settled(d, start_counts, len(pairs)), args.timeout)
        elapsed = time.monotonic() - started
        return _report(args, client, pairs, stamps, start_counts, elapsed, weights, source)
    finally:
        if client is not None:
            client.close()
        code = stop_node(process)
        if code != 0:
            print(f"node exited with code {code}; see {log_path}")


def _delta(values: dict[str, str], start: dict[str, str], key: str) -> int:
    return int(values.get(key, 0)) - int(start.get(key, 0))


def _settled(values: dict[str, str], start: dict[str, str], sent: int) -> bool:
    """Every pair sent since ``start`` has been fused, dropped, or failed, per the node.

    A pair lost in transport never reaches the node's counters, so this can stay False: the
    caller waits with a timeout.
    """
    outcomes = ("fused", "dropped.replaced", "dropped.stale")
    errors = [k for k in values if k.startswith("errors.")]
    done = sum(_delta(values, start, key) for key in (*outcomes, *errors))
    return done >= sent


def _report(
    args: argparse.Namespace,
    client: FusionClient,
    pairs: list[PixelPair],
    stamps: list[int],
    start_counts: dict[str, str],
    elapsed: float,
    weights: str,
    source: str,
) -> DemoReport:
    values = dict(client.diagnostics)

    def delta(key: str) -> int:
        return _delta(values, start_counts, key)

    latencies, saved = [], []
    for index, stamp in enumerate(stamps):
        got = client.fused.get(stamp)
        if got is None:
            continue
        msg, received = got
        latencies.append((received - stamp) / 1e9)
        if len(saved) < args.save:
            from gifnet_ros.fusion.conversion import image_to_array

            fused = image_to_array(msg)
            name = f"fused_{index:03d}.png"
            write_bytes_atomic(args.out / name, _png(fused))
            write_bytes_atomic(
                args.out / f"montage_{index:03d}.png", _png(_montage(*pairs[index], fused))
            )
            saved.append(name)
    height, width = pairs[0][1].shape[:2]
    report = DemoReport(
        source=source,
        size=f"{width}x{height}",
        device=values.get("device"),
        network=values.get("network"),
        backend=values.get("backend"),
        precision=values.get("precision"),
        mode=values.get("mode"),
        weights=weights,
        pairs_sent=len(stamps),
        fused_received=len(latencies),
        node=NodeCounts(
            pairs=delta("pairs"),
            fused=delta("fused"),
            dropped={k[8:]: delta(k) for k in values if k.startswith("dropped.")},
            errors={k[7:]: delta(k) for k in values if k.startswith("errors.")},
            model_median_s=values.get("model_median_s"),
        ),
        latency_s=Latency.of(latencies),
        seconds=round(elapsed, 2),
        images=saved,
    )
    write_bytes_atomic(args.out / "report.json", report.json_text().encode())
    text = _report_text(report)
    write_bytes_atomic(args.out / "report.txt", text.encode())
    return report


def _report_text(report: DemoReport) -> str:
    node, latency = report.node, report.latency_s

    def seconds(value: float | None) -> str:
        return (
            "n/a"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else (f"{value:.3f} s")
        )

    lines = [
        f"GIFNet fusion node demo: {report.source}, {report.size}, "
        f"device {report.device} {report.backend} {report.precision}, "
        f"mode {report.mode}",
        f"pairs sent        {report.pairs_sent}",
        f"fused received    {report.fused_received}",
        f"node: pairs {node.pairs}, fused {node.fused}, dropped {node.dropped}, "
        f"errors {node.errors}",
        f"latency (RGB stamp -> fused received): median {seconds(latency.median)}, "
        f"p95 {seconds(latency.p95)}",
        f"model time per pair (node, median): {node.model_median_s} s",
        f"images: {', '.join(report.images) or 'none'}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Console script ``gifnet-demo``; 0 when at least one fused image came back."""
    args = _parser().parse_args(argv)
    if args.frames < 1:
        _parser().error("--frames must be >= 1")
    if args.every < 1:
        _parser().error("--every must be >= 1")
    try:
        report = run_demo(args)
    except (DemoError, ToolError, ClientError) as exc:
        print(f"gifnet-demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gifnet-demo: interrupted", file=sys.stderr)
        return 130
    print(_report_text(report), end="")
    print(f"written to {args.out.resolve()}")
    return 0 if report.fused_received > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
