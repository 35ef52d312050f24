"""``gifnet-calibrate`` (``ros2 run gifnet_ros calibrate``): register thermal onto RGB.

GIFNet fuses pixel by pixel, so the thermal image must show each scene point at the RGB
image's pixel. This tool estimates the 3x3 homography that the node's ``align.method:
homography`` applies (thermal pixel -> RGB pixel, ``gifnet_ros.fusion.align``) from views of a
checkerboard that both cameras see: a board that is heated or cooled (or made of materials of
different emissivity) shows its squares in thermal as well as in visible light.

How corners are paired. OpenCV's sector-based detector (``findChessboardCornersSB``) finds
the inner corners in either polarity (a heated board is bright where the printed squares are
dark, or the other way round), but it may start the grid from a different corner in the two
images. Every ordering of a grid that maps the board onto itself (a 180-degree turn, mirror
flips and, for a square board, quarter turns) fits one view equally well, so a single view
cannot tell them apart; across views of different poses only the right orderings agree on one
homography. The tool therefore fixes the ordering of the first view to each candidate in
turn, lets every other view pick the ordering that fits, refits on all corners, and keeps the
candidate with the smallest error. Only when the views cannot separate two candidates (all
views in nearly one pose) does it fall back on the assumption that the cameras are upright
relative to each other, and says so.

The result is a node parameter file (ROS 2 params format, the ``/**`` wildcard as in
``config/fusion.yaml``) holding ``align.method``, ``align.homography`` and ``align.crop``, so
``ros2 launch gifnet_ros fusion.launch.py params_file:=FILE`` takes it as it is; its header
comment and the tool's output give the same alignment as ``gifnet-fuse-bag`` flags, and
``--flags-from FILE`` prints them for scripts.

Thermal frames are treated as the node treats them: 16-bit or float frames are normalised to
8 bits (``gifnet_ros.fusion.thermal``, same flags as the other tools) and then cropped, and the
homography works in the cropped image's coordinates. No ROS here: bags are read with rosbags.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from gifnet_ros.fusion.align import (
    IDENTITY,
    NO_CROP,
    Alignment,
    AlignmentError,
    read_params_alignment,
    read_params_file,
)
from gifnet_ros.fusion.image_files import (
    ImageFileError,
    read_image,
    write_bytes_atomic,
    write_image,
)
from gifnet_ros.fusion.thermal import normalize_thermal
from gifnet_ros.offline.bag_reader import BagReadError, PairedBagReader, stamp_text

PROG = "gifnet-calibrate"
DEFAULT_MIN_VIEWS = 3
DEFAULT_MAX_PAIRS = 60
DEFAULT_SLOP = 0.05  # the node's sync.slop default
WARN_MEAN_PX = 1.0
WARN_MAX_PX = 3.0
WARN_COVERAGE = 0.5
AMBIGUITY_FACTOR = 2.0
AMBIGUITY_PX = 0.5
DETECTOR_FLAGS = cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY


class CalibrationError(Exception):
    """A problem the user can act on; printed as one line, exit status 2."""


@dataclass(frozen=True)
class View:
    """One thermal/RGB image pair with the board found in both.

    ``thermal`` and ``rgb`` are the inner corners (N x 2, pixels; thermal after the crop) in
    the detector's order, which may differ between the two images.
    """

    name: str
    thermal: np.ndarray
    rgb: np.ndarray


@dataclass(frozen=True)
class Calibration:
    """The fitted homography and how well it explains the corners (RGB pixels)."""

    homography: np.ndarray
    views: tuple[View, ...]
    errors: np.ndarray
    orientation_assumed: bool

    @property
    def mean_error(self) -> float:
        return float(self.errors.mean())

    @property
    def max_error(self) -> float:
        return float(self.errors.max())

    def view_errors(self) -> list[float]:
        """Mean corner error of each view, in the order of ``views``."""
        return [float(chunk.mean()) for chunk in np.split(self.errors, len(self.views))]


# ---------------------------------------------------------------------------- geometry


def grid_orderings(board: tuple[int, int]) -> list[np.ndarray]:
    """Index permutations of a row-major COLSxROWS corner grid that map the board onto itself.

    Four for a rectangular board (identity, the two mirror flips, the half turn); eight for a
    square one (those and their transposes: quarter turns and diagonal mirrors).
    """
    cols, rows = board
    grid = np.arange(cols * rows).reshape(rows, cols)
    shapes = [grid, grid[:, ::-1], grid[::-1, :], grid[::-1, ::-1]]
    if cols == rows:
        shapes += [g.T for g in shapes]
    return [g.reshape(-1).copy() for g in shapes]


def find_corners(grey: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """Inner corners (N x 2, float64, the detector's order) of an 8-bit grey image, or None.

    The sector-based detector is used because it finds boards in either polarity and stays
    sub-pixel accurate on the blurred, noisy, low-resolution images thermal cores give.
    """
    found, corners = cv2.findChessboardCornersSB(grey, board, flags=DETECTOR_FLAGS)
    if not found:
        return None
    return corners.reshape(-1, 2).astype(np.float64)


def transform(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (N x 2) mapped by ``homography``."""
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2), homography).reshape(-1, 2)


def _fit(thermal: np.ndarray, rgb: np.ndarray) -> np.ndarray | None:
    """Least-squares homography thermal -> RGB (OpenCV refines it by Levenberg-Marquardt)."""
    matrix, _ = cv2.findHomography(thermal, rgb, 0)
    if matrix is None or not np.isfinite(matrix).all() or abs(matrix[2, 2]) < 1e-12:
        return None
    return matrix / matrix[2, 2]


def _errors(matrix: np.ndarray, thermal: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    return np.linalg.norm(transform(matrix, thermal) - rgb, axis=1)


def _tilt(matrix: np.ndarray, centre: np.ndarray) -> tuple[bool, float]:
    """(mirrored, rotation in radians) of the homography's local linear map at ``centre``.

    The tie-break for views that cannot tell the board's orderings apart: a rig whose cameras
    are upright relative to each other maps the thermal x axis to the RGB x axis, unmirrored.
    """
    origin, x_step, y_step = transform(matrix, centre + np.array([[0, 0], [1, 0], [0, 1.0]]))
    dx, dy = x_step - origin, y_step - origin
    mirrored = dx[0] * dy[1] - dx[1] * dy[0] < 0
    return bool(mirrored), abs(math.atan2(dx[1], dx[0]))


def solve(
    views: Sequence[View], board: tuple[int, int], thermal_size: tuple[int, int]
) -> Calibration:
    """The homography explaining all views, with each view's corner ordering resolved.

    ``thermal_size`` is (width, height) of the (cropped) thermal image, for the tie-break.
    See the module docstring for the method. Raises CalibrationError when no fit exists.
    """
    orderings = grid_orderings(board)
    candidates: list[tuple[float, np.ndarray, np.ndarray]] = []  # mean error, matrix, errors
    for first in orderings:
        matrix = _fit(views[0].thermal[first], views[0].rgb)
        if matrix is None:
            continue
        chosen = [first]
        for _ in range(2):  # pick each view's ordering under the current fit, then refit
            chosen = [first] + [
                min(orderings, key=lambda o, v=v: _errors(matrix, v.thermal[o], v.rgb).mean())
                for v in views[1:]
            ]
            refit = _fit(
                np.concatenate([v.thermal[o] for v, o in zip(views, chosen, strict=True)]),
                np.concatenate([v.rgb for v in views]),
            )
            if refit is None:
                break
            matrix = refit
        errors = np.concatenate(
            [_errors(matrix, v.thermal[o], v.rgb) for v, o in zip(views, chosen, strict=True)]
        )
        candidates.append((float(errors.mean()), matrix, errors))
    if not candidates:
        raise CalibrationError("no homography fits the corners (are the boards degenerate?)")
    candidates.sort(key=lambda c: c[0])
    best = candidates[0][0]
    close = [c for c in candidates if c[0] <= AMBIGUITY_FACTOR * best + AMBIGUITY_PX]
    centre = np.array(thermal_size, np.float64) / 2.0
    if len(close) > 1:
        close.sort(key=lambda c: _tilt(c[1], centre))
    _, matrix, errors = close[0]
    return Calibration(matrix, tuple(views), errors, len(close) > 1)


def coverage(
    calibration: Calibration, thermal_size: tuple[int, int], rgb_size: tuple[int, int]
) -> float:
    """Share of the RGB image's thermal-covered part inside the convex hull of all corners.

    The homography is measured only where boards were; outside their hull it is
    extrapolated, so a small share means the fused image's edges may be misregistered.
    """
    width, height = rgb_size
    overlap = Alignment.create("homography", calibration.homography.reshape(-1)).apply(
        np.ones(thermal_size[::-1], np.uint8), (height, width)
    )
    hull = np.zeros((height, width), np.uint8)
    points = np.concatenate([v.rgb for v in calibration.views]).astype(np.float32)
    cv2.fillConvexPoly(hull, np.rint(cv2.convexHull(points)).astype(np.int32), 1)
    seen = int(overlap.sum())
    return float((hull & overlap).sum()) / seen if seen else 0.0


# ---------------------------------------------------------------------------- images


def thermal_grey(image: np.ndarray, crop: Sequence[int], args: argparse.Namespace) -> np.ndarray:
    """A thermal frame as the node sees it before alignment: grey, 8-bit, then cropped."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = normalize_thermal(
        image, args.thermal_norm, tuple(args.thermal_percentiles), tuple(args.thermal_range)
    )
    _, _, width, height = crop
    size = (height, width) if width else grey.shape
    return Alignment.create("none", IDENTITY, crop).apply(grey, size)


def rgb_grey(image: np.ndarray) -> np.ndarray:
    """An RGB (or grey) frame as 8-bit grey for the detector."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        image = normalize_thermal(image, "percentile")  # 16-bit visible: stretched to 8 bits
    return image


def preview(thermal: np.ndarray, rgb: np.ndarray, alignment: Alignment, style: str) -> np.ndarray:
    """The RGB image with the registered thermal image over it, for a person to judge.

    ``checker``: squares alternate between RGB and the thermal image (false colour), so an
    edge crossing a square border shows any misregistration as a break; ``blend``: half and
    half. ``thermal`` is the uncropped 8-bit grey frame (``alignment`` crops and warps it).
    """
    colour = rgb if rgb.ndim == 3 else cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    if colour.dtype != np.uint8:
        colour = cv2.cvtColor(rgb_grey(colour), cv2.COLOR_GRAY2RGB)
    warped = alignment.apply(thermal, colour.shape)
    heat = cv2.cvtColor(cv2.applyColorMap(warped, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    if style == "blend":
        return cv2.addWeighted(colour, 0.5, heat, 0.5, 0.0)
    height, width = colour.shape[:2]
    tile = max(8, min(height, width) // 8)
    ys, xs = np.mgrid[0:height, 0:width]
    squares = ((ys // tile + xs // tile) % 2 == 1)[:, :, None]
    return np.where(squares, heat, colour)


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Frame:
    """One input pair as read: a name for messages, the thermal and the RGB image."""

    name: str
    thermal: np.ndarray
    rgb: np.ndarray


def file_frames(thermal: Sequence[Path], rgb: Sequence[Path]) -> Iterator[Frame]:
    """Pairs of image files, the k-th thermal file with the k-th RGB file."""
    if len(thermal) != len(rgb):
        raise CalibrationError(
            f"{len(thermal)} thermal and {len(rgb)} RGB images given; they pair in order, "
            "so the counts must match"
        )
    for path in (*thermal, *rgb):
        if not path.is_file():
            raise CalibrationError(f"{path}: no such file")
    for thermal_path, rgb_path in zip(thermal, rgb, strict=True):
        try:
            yield Frame(
                f"{thermal_path} + {rgb_path}", read_image(thermal_path), read_image(rgb_path)
            )
        except ImageFileError as exc:
            raise CalibrationError(str(exc)) from None


def bag_frames(
    bag: Path, thermal_topic: str, rgb_topic: str, slop: float, max_pairs: int
) -> Iterator[Frame]:
    """Stamp-paired frames of a rosbag2, at most ``max_pairs`` spread evenly over it.

    Pairs as ``gifnet-fuse-bag`` does (``bag_reader.PairedBagReader``). The chosen pairs'
    messages are kept as bytes and decoded one pair at a time, in the order of the RGB
    messages, so a long recording never sits in memory as pixels.
    """
    try:
        with PairedBagReader(bag, thermal_topic, rgb_topic) as reader:
            pairs = reader.pair(slop).pairs
            if not pairs:
                raise CalibrationError(
                    f"{bag}: no {reader.thermal.topic} / {reader.rgb.topic} pairs within {slop} s "
                    f"({len(reader.thermal.stamps)} thermal, {len(reader.rgb.stamps)} RGB "
                    "messages)"
                )
            picks = np.unique(np.linspace(0, len(pairs) - 1, min(max_pairs, len(pairs))).round())
            chosen = {p.seq: p for p in reader.read_pairs(int(i) for i in picks)}
        for seq in sorted(chosen):
            pair = chosen.pop(seq)
            name = f"{bag} pair at RGB stamp {stamp_text(pair.rgb.stamp_ns)}"
            yield Frame(name, pair.thermal.decode(name)[1], pair.rgb.decode(name)[1])
    except BagReadError as exc:
        raise CalibrationError(str(exc)) from None


# ---------------------------------------------------------------------------- output


def params_document(homography: np.ndarray, crop: Sequence[int]) -> dict[str, Any]:
    """The node parameters that apply ``homography`` after ``crop`` (ROS 2 params layout).

    The crop is always written, ``[0, 0, 0, 0]`` included: the homography is only valid for
    the crop it was measured with, so a file merged over one with another crop must reset it.
    """
    return {
        "/**": {
            "ros__parameters": {
                "align": {
                    "method": "homography",
                    "homography": [float(v) for v in homography.reshape(-1)],
                    "crop": [int(v) for v in crop],
                }
            }
        }
    }


def read_params(path: Path) -> Alignment:
    """The alignment a node parameter file sets (nested or dotted ``align.*`` keys); it must
    hold a homography, since that is what this tool's flags carry."""
    try:
        if "align.homography" not in read_params_file(path):
            raise CalibrationError(f"{path}: no ros__parameters with align.homography")
        return read_params_alignment(path)
    except AlignmentError as exc:
        raise CalibrationError(str(exc)) from None


def fuse_bag_flags(alignment: Alignment) -> list[str]:
    """``gifnet-fuse-bag`` flags for ``alignment`` (the tool also takes the file itself:
    ``--params-file``)."""
    # Positional notation at full precision: argparse takes "-4e-05" for an option, not a number.
    numbers = (np.format_float_positional(v, trim="-") for v in alignment.homography)
    flags = ["--align", alignment.method, "--homography", *numbers]
    if alignment.crop != NO_CROP:
        flags += ["--crop", *(str(v) for v in alignment.crop)]
    return flags


def params_text(calibration: Calibration, crop: Sequence[int], board: tuple[int, int]) -> str:
    """The parameter file: a comment saying where it came from and how to use it, then YAML."""
    header = [
        f"Thermal-to-RGB registration from {PROG}: {len(calibration.views)} views of a "
        f"{board[0]}x{board[1]} board,",
        f"reprojection error mean {calibration.mean_error:.3f} px, max "
        f"{calibration.max_error:.3f} px (RGB pixels).",
        "Use: ros2 launch gifnet_ros fusion.launch.py params_file:=THIS_FILE",
        "  or a second --params-file after your own: ros2 run gifnet_ros fusion_node --ros-args "
        "--params-file yours.yaml --params-file THIS_FILE",
        "Offline: gifnet-fuse-bag BAG -o OUT ... --params-file THIS_FILE (or gifnet-fuse-bags)",
    ]
    body = yaml.safe_dump(
        params_document(calibration.homography, crop), default_flow_style=None, sort_keys=False
    )
    return "".join(f"# {line}\n" for line in header) + body


def _width_height(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


def collect_views(
    frames: Iterator[Frame], args: argparse.Namespace, from_bag: bool
) -> tuple[list[View], Frame, dict[str, tuple[int, int]], int]:
    """Detect the board in every frame: (views, first frame used, image sizes, frames read).

    With image files a board missing from either image is an error naming it (the user chose
    those images); in a bag, frames without the board in both images are skipped.
    """
    views: list[View] = []
    first: Frame | None = None
    sizes: dict[str, tuple[int, int]] = {}
    count = 0
    for frame in frames:
        count += 1
        try:
            thermal = thermal_grey(frame.thermal, args.crop, args)
        except ValueError as exc:
            raise CalibrationError(f"{frame.name}: thermal image: {exc}") from None
        for role, image in (("thermal", thermal), ("rgb", frame.rgb)):
            width, height = _width_height(image)
            size = sizes.setdefault(role, (width, height))
            if (width, height) != size:
                raise CalibrationError(
                    f"{frame.name}: {role} image is {width}x{height}, "
                    f"the first was {size[0]}x{size[1]}; one camera, one size"
                )
        rgb_corners = find_corners(rgb_grey(frame.rgb), args.board)
        thermal_corners = None if rgb_corners is None else find_corners(thermal, args.board)
        if thermal_corners is None:
            if from_bag:
                continue
            role = "RGB" if rgb_corners is None else "thermal"
            board = f"{args.board[0]}x{args.board[1]}"
            raise CalibrationError(f"{frame.name}: {board} board not found in the {role} image")
        views.append(View(frame.name, thermal_corners, rgb_corners))
        first = first or frame
    if len(views) < args.min_views:
        raise CalibrationError(
            f"too few views: the board was found in both images of {len(views)} of {count} "
            f"pairs, {args.min_views} needed (--min-views)"
        )
    assert first is not None
    return views, first, sizes, count


def run(args: argparse.Namespace) -> None:
    """Calibrate, print the result and write the parameter file (and the preview).

    ``args`` are the command line's, checked by ``gifnet_ros.tools.calibrate``.
    """
    if args.bag is not None:
        frames = bag_frames(args.bag, args.thermal_topic, args.rgb_topic, args.slop, args.max_pairs)
    else:
        frames = file_frames(args.thermal, args.rgb)
    views, first, sizes, count = collect_views(frames, args, args.bag is not None)
    calibration = solve(views, args.board, sizes["thermal"])
    try:
        alignment = Alignment.create("homography", calibration.homography.reshape(-1), args.crop)
    except AlignmentError as exc:
        raise CalibrationError(f"the fitted homography is unusable: {exc}") from None
    share = coverage(calibration, sizes["thermal"], sizes["rgb"])

    print(f"{PROG}: {len(views)} views used of {count} pairs")
    print(
        f"  reprojection error (RGB px): mean {calibration.mean_error:.3f}, "
        f"max {calibration.max_error:.3f}"
    )
    print(f"  boards cover {100 * share:.0f}% of the RGB image where thermal lands")
    print("  homography (thermal -> RGB, row-major):")
    for row in calibration.homography:
        print("    " + "  ".join(f"{v: .6g}" for v in row))
    warnings = []
    if calibration.mean_error > WARN_MEAN_PX or calibration.max_error > WARN_MAX_PX:
        worst = int(np.argmax(calibration.view_errors()))
        warnings.append(
            f"high reprojection error (mean {calibration.mean_error:.2f} px, max "
            f"{calibration.max_error:.2f} px; worst view: {views[worst].name}): a bent board, "
            "a wrong detection, or boards at different distances with cameras far apart"
        )
    if share < WARN_COVERAGE:
        warnings.append(
            f"the boards cover only {100 * share:.0f}% of the image: the homography is "
            "extrapolated elsewhere; add views with the board near the edges and corners"
        )
    if calibration.orientation_assumed:
        warnings.append(
            "the views are too alike to tell the board's orientation apart; assumed the "
            "cameras are upright relative to each other (vary the board's pose to check)"
        )
    for line in warnings:
        print(f"{PROG}: warning: {line}", file=sys.stderr)

    image = None
    if args.preview is not None:  # made before anything is written: an error leaves nothing
        full = thermal_grey(first.thermal, NO_CROP, args)  # the alignment crops it
        image = preview(full, first.rgb, alignment, args.preview_style)
    write_bytes_atomic(args.output, params_text(calibration, args.crop, args.board).encode())
    print(f"  wrote {args.output}")
    print(f"  offline: gifnet-fuse-bag BAG -o OUT ... --params-file {args.output}")
    if image is not None:
        try:
            write_image(args.preview, image)
        except ImageFileError as exc:
            raise CalibrationError(str(exc)) from None
        print(f"  wrote {args.preview} ({first.name})")
