"""gifnet-calibrate on synthetic views of a checkerboard with a known thermal-to-RGB homography.

The board is rendered (4x supersampled) into a 320x240 RGB image for several poses and, through
the inverse of a known homography, into a 160x120 thermal image that is blurred, noisy and, for
a heated board, of inverted polarity. The recovered matrix is judged against the true one over
the whole thermal image, never against corners the tool itself detected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bag_helpers import decoded
from hypothesis import given, settings
from hypothesis import strategies as st
from node_harness import DOMAIN_ID, STARTUP_TIMEOUT, dds_env

from gifnet_ros.fusion.align import Alignment
from gifnet_ros.fusion.image_files import write_image
from gifnet_ros.offline.bag_io import IMAGE, image_cdr, open_writer, typestore
from gifnet_ros.offline.calibrate import View, grid_orderings, preview, solve
from gifnet_ros.tools.calibrate import main

RGB_SIZE = (320, 240)  # width, height
THERMAL_SIZE = (160, 120)
# Thermal pixel -> RGB pixel: about 2x, turned 3 degrees, shifted, with some perspective.
TRUE_H = np.array(
    [[1.93, -0.10, 14.0], [0.09, 1.96, 6.0], [4.0e-5, -3.0e-5, 1.0]], dtype=np.float64
)
# Board poses in the RGB image: centre x, y, scale, in-plane angle (deg), perspective x, y.
POSES = [
    (95, 75, 0.42, 8, 5e-4, 0.0),
    (225, 80, 0.40, -12, 0.0, 6e-4),
    (100, 165, 0.45, 20, -4e-4, 3e-4),
    (225, 160, 0.42, -6, 3e-4, -4e-4),
    (160, 120, 0.55, 35, 0.0, 0.0),
]
SQUARE = 32  # texture pixels per square


def board_texture(board: tuple[int, int]) -> np.ndarray:
    """Black and white squares (cols+1 x rows+1) with a one-square white border."""
    cols, rows = board
    squares = (np.add.outer(np.arange(rows + 1), np.arange(cols + 1)) % 2) * 255
    inner = np.kron(squares, np.ones((SQUARE, SQUARE))).astype(np.uint8)
    return cv2.copyMakeBorder(inner, *[SQUARE] * 4, cv2.BORDER_CONSTANT, value=255)


def pose_matrix(texture: np.ndarray, pose: tuple[float, ...]) -> np.ndarray:
    """Board texture pixel -> RGB pixel for one pose."""
    cx, cy, scale, angle, px, py = pose
    height, width = texture.shape
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1.0]])
    a = np.deg2rad(angle)
    turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1.0]])
    place = np.array([[scale, 0, cx], [0, scale, cy], [0, 0, 1.0]])
    return place @ tilt @ turn @ centre


def render(texture: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The texture seen through ``matrix`` on a grey background, antialiased by 4x supersampling."""
    # Supersampled pixel j covers image coordinates (j - 1.5) / 4 .. so that the average of
    # pixels 4i .. 4i + 3 is centred on pixel i (OpenCV's convention: pixel centres at integers).
    ss = np.array([[4.0, 0.0, 1.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]])
    big = cv2.warpPerspective(
        texture, ss @ matrix, (size[0] * 4, size[1] * 4), flags=cv2.INTER_LINEAR, borderValue=128
    )
    return cv2.resize(big, size, interpolation=cv2.INTER_AREA)


def synthetic_pair(
    board: tuple[int, int],
    pose: tuple[float, ...],
    rng: np.random.Generator,
    *,
    inverted: bool = True,
    sixteen_bit: bool = False,
    thermal_offset: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """(thermal, RGB) of one pose: RGB in colour, thermal through TRUE_H's inverse, blurred
    (sigma 1 px), noisy (sigma 4 levels), inverted for a heated board; 16-bit as raw counts
    (7000 + 12 per level). ``thermal_offset`` pads the thermal frame on the left and top, for a
    crop that removes it again."""
    texture = board_texture(board)
    to_rgb = pose_matrix(texture, pose)
    grey = render(texture, to_rgb, RGB_SIZE)
    rgb = np.dstack([grey, np.clip(grey.astype(int) + 20, 0, 255).astype(np.uint8), grey])
    thermal = render(texture, np.linalg.inv(TRUE_H) @ to_rgb, THERMAL_SIZE).astype(np.float64)
    if inverted:
        thermal = 255.0 - thermal
    thermal = cv2.GaussianBlur(thermal, (0, 0), 1.0) + rng.normal(0, 4.0, thermal.shape)
    x, y = thermal_offset
    thermal = cv2.copyMakeBorder(thermal, y, 0, x, 0, cv2.BORDER_REPLICATE)
    if sixteen_bit:
        return (7000 + 12 * np.clip(thermal, 0, 255)).astype(np.uint16), rgb
    return np.clip(np.rint(thermal), 0, 255).astype(np.uint8), rgb


def write_pairs(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list, list]:
    thermal, rgb = [], []
    for k, (t, r) in enumerate(pairs):
        thermal.append(folder / f"thermal_{k}.png")
        rgb.append(folder / f"rgb_{k}.png")
        write_image(thermal[-1], t)
        write_image(rgb[-1], r)
    return thermal, rgb


def warp_error(matrix: np.ndarray, truth: np.ndarray = TRUE_H) -> tuple[float, float]:
    """(mean, max) distance in RGB pixels between two homographies over the thermal image."""
    xs, ys = np.meshgrid(np.arange(0, THERMAL_SIZE[0], 2.0), np.arange(0, THERMAL_SIZE[1], 2.0))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    gap = cv2.perspectiveTransform(points, matrix) - cv2.perspectiveTransform(points, truth)
    distance = np.linalg.norm(gap.reshape(-1, 2), axis=1)
    return float(distance.mean()), float(distance.max())


def loaded(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["/**"]["ros__parameters"]["align"]


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "case, board, inverted, sixteen_bit",
    [
        ("heated 7x5, inverted 8-bit thermal", (7, 5), True, False),
        ("cooled 6x4, same polarity, 16-bit", (6, 4), False, True),
        ("square 5x5, inverted 16-bit", (5, 5), True, True),
    ],
)
def test_recovers_the_known_homography(tmp_path, capsys, case, board, inverted, sixteen_bit):
    rng = np.random.default_rng(len(case))
    pairs = [
        synthetic_pair(board, p, rng, inverted=inverted, sixteen_bit=sixteen_bit) for p in POSES
    ]
    thermal, rgb = write_pairs(tmp_path, pairs)
    output, preview = tmp_path / "calib.yaml", tmp_path / "preview.png"
    code, out, err = run(
        [
            "--thermal",
            *thermal,
            "--rgb",
            *rgb,
            "--board",
            f"{board[0]}x{board[1]}",
            "-o",
            output,
            "--preview",
            preview,
        ],
        capsys,
    )
    assert code == 0, err
    assert f"{len(POSES)} views used" in out
    align = loaded(output)
    assert align["method"] == "homography" and align["crop"] == [0, 0, 0, 0]
    mean, worst = warp_error(np.array(align["homography"]).reshape(3, 3))
    assert mean < 1.0 and worst < 2.0
    printed = re.search(r"mean ([\d.]+), max ([\d.]+)", out)
    assert printed and float(printed[1]) < 0.5, out  # the corners' own residual is small too
    print(
        f"{case}: homography error over the thermal image mean {mean:.3f} px, max {worst:.3f};"
        f" corner reprojection mean {printed[1]} px, max {printed[2]}"
    )
    shown = cv2.imread(str(preview))
    assert shown.shape == (RGB_SIZE[1], RGB_SIZE[0], 3)


def test_crop_is_applied_first_and_written(tmp_path, capsys):
    """Thermal frames padded by (12, 7) px and cropped back: the matrix is in crop coordinates."""
    rng = np.random.default_rng(7)
    pairs = [synthetic_pair((7, 5), p, rng, thermal_offset=(12, 7)) for p in POSES[:4]]
    thermal, rgb = write_pairs(tmp_path, pairs)
    output = tmp_path / "calib.yaml"
    crop = [12, 7, *THERMAL_SIZE]
    code, out, err = run(
        ["--thermal", *thermal, "--rgb", *rgb, "--board", "7x5", "--crop", *crop, "-o", output],
        capsys,
    )
    assert code == 0, err
    align = loaded(output)
    assert align["crop"] == crop
    mean, worst = warp_error(np.array(align["homography"]).reshape(3, 3))
    print(f"crop (12, 7): homography error mean {mean:.3f} px, max {worst:.3f}")
    assert mean < 1.0
    assert f"offline: gifnet-fuse-bag BAG -o OUT ... --params-file {output}" in out


def test_preview_shows_rgb_and_the_warped_thermal_image():
    """Checker: squares of 30 px (240 / 8) alternate between the RGB image untouched and the
    inferno false colour of gifnet_ros.fusion.align's warp; blend: the mean of the two."""
    rng = np.random.default_rng(2)
    thermal, rgb = synthetic_pair((7, 5), POSES[0], rng)
    alignment = Alignment.create("homography", TRUE_H.reshape(-1))
    heat = cv2.applyColorMap(alignment.apply(thermal, rgb.shape), cv2.COLORMAP_INFERNO)[..., ::-1]
    shown = preview(thermal, rgb, alignment, "checker")
    ys, xs = np.mgrid[0 : RGB_SIZE[1], 0 : RGB_SIZE[0]]
    thermal_square = (ys // 30 + xs // 30) % 2 == 1
    np.testing.assert_array_equal(shown[~thermal_square], rgb[~thermal_square])
    np.testing.assert_array_equal(shown[thermal_square], heat[thermal_square])
    mixed = preview(thermal, rgb, alignment, "blend").astype(int)
    assert np.abs(mixed - (rgb.astype(int) + heat) / 2).max() <= 1


def _lattice(board: tuple[int, int]) -> np.ndarray:
    cols, rows = board
    ys, xs = np.mgrid[0:rows, 0:cols]
    return np.stack([(xs.ravel() + 2) * SQUARE, (ys.ravel() + 2) * SQUARE], axis=1).astype(float)


@settings(max_examples=25, deadline=None)
@given(
    square=st.booleans(),
    picks=st.lists(st.integers(0, 7), min_size=3, max_size=5),
    rgb_picks=st.lists(st.integers(0, 7), min_size=5, max_size=5),
)
def test_any_detection_order_in_either_image_gives_the_true_homography(square, picks, rgb_picks):
    """Exact corners, each view's thermal and RGB grids listed in an arbitrary board symmetry."""
    board = (5, 5) if square else (7, 5)
    orderings = grid_orderings(board)
    texture = board_texture(board)
    views = []
    for k, pick in enumerate(picks):
        to_rgb = pose_matrix(texture, POSES[k])
        lattice = _lattice(board).reshape(-1, 1, 2)
        rgb = cv2.perspectiveTransform(lattice, to_rgb).reshape(-1, 2)
        thermal = cv2.perspectiveTransform(rgb.reshape(-1, 1, 2), np.linalg.inv(TRUE_H))
        thermal = thermal.reshape(-1, 2)[orderings[pick % len(orderings)]]
        rgb = rgb[orderings[rgb_picks[k] % len(orderings)]]
        views.append(View(f"view {k}", thermal, rgb))
    calibration = solve(views, board, THERMAL_SIZE)
    assert warp_error(calibration.homography)[1] < 1e-3
    assert not calibration.orientation_assumed


def test_one_pose_falls_back_to_upright_cameras_and_says_so():
    board = (7, 5)
    orderings = grid_orderings(board)
    rgb = cv2.perspectiveTransform(
        _lattice(board).reshape(-1, 1, 2), pose_matrix(board_texture(board), POSES[0])
    ).reshape(-1, 2)
    thermal = cv2.perspectiveTransform(rgb.reshape(-1, 1, 2), np.linalg.inv(TRUE_H)).reshape(-1, 2)
    views = [View(str(k), thermal[orderings[k]], rgb) for k in (3, 3, 3)]
    calibration = solve(views, board, THERMAL_SIZE)
    assert calibration.orientation_assumed
    assert warp_error(calibration.homography)[1] < 1e-3  # TRUE_H is upright (3 degrees)


def write_calibration_bag(path: Path, rng: np.random.Generator) -> int:
    """A bag of 16-bit thermal + rgb8 frames 100 ms apart, thermal stamped 7 ms late: the
    board in every pose, and frames without a board in between (skipped by the tool); one
    extra thermal message has no partner. Returns how many pairs show the board."""
    store = typestore()
    header = store.types["std_msgs/msg/Header"]
    stamp_type = store.types["builtin_interfaces/msg/Time"]
    blank = (
        np.full(THERMAL_SIZE[::-1], 7000, np.uint16),
        np.full((*RGB_SIZE[::-1], 3), 128, np.uint8),
    )
    frames = []
    for pose in POSES:
        frames += [synthetic_pair((7, 5), pose, rng, sixteen_bit=True), blank]
    start = 1_700_000_000_000_000_000
    writer = open_writer(path, "mcap")
    with writer:
        thermal = writer.add_connection("/thermal/image", IMAGE, typestore=store)
        rgb = writer.add_connection("/rgb/image", IMAGE, typestore=store)

        def write(conn, pixels, encoding, stamp):
            msg_header = header(
                stamp=stamp_type(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
            )
            writer.write(conn, stamp + 1_000_000, image_cdr(msg_header, pixels, encoding))

        for k, (t, r) in enumerate(frames):
            write(rgb, r, "rgb8", start + k * 100_000_000)
            write(thermal, t, "mono16", start + k * 100_000_000 + 7_000_000)
        write(thermal, blank[0], "mono16", start + len(frames) * 100_000_000 + 50_000_000)
    return len(POSES)


def test_bag_input_pairs_by_stamp_and_skips_frames_without_the_board(tmp_path, capsys):
    bag = tmp_path / "calib_bag"
    with_board = write_calibration_bag(bag, np.random.default_rng(3))
    output = tmp_path / "calib.yaml"
    code, out, err = run(
        [
            "--bag",
            bag,
            "--thermal-topic",
            "/thermal/image",
            "--rgb-topic",
            "rgb/image",
            "--board",
            "7x5",
            "-o",
            output,
        ],
        capsys,
    )
    assert code == 0, err
    assert f"{with_board} views used of {2 * len(POSES)} pairs" in out
    mean, worst = warp_error(np.array(loaded(output)["homography"]).reshape(3, 3))
    print(f"bag, 16-bit: homography error mean {mean:.3f} px, max {worst:.3f}")
    assert mean < 1.0


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(11)
    pairs = [synthetic_pair((7, 5), p, rng) for p in POSES[:3]]
    pairs.append((np.full(THERMAL_SIZE[::-1], 90, np.uint8), pairs[0][1]))  # no board in thermal
    return write_pairs(tmp_path, pairs)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (lambda t, r: ["--thermal", *t[:3], "--rgb", *r[:2]], "3 thermal and 2 RGB images given"),
        (
            lambda t, r: ["--thermal", *t, "--rgb", *r],
            r"thermal_3.png \+ .*rgb_3.png: 7x5 board "
            "not found in the thermal image",
        ),
        (lambda t, r: ["--thermal", t[0], "--rgb", r[0]], "too few views: .* 1 of 1 pairs, 3 "),
        (
            lambda t, r: ["--thermal", *t[:3], "--rgb", *r[:3], "--crop", 0, 0, 500, 10],
            r"align.crop \[0, 0, 500, 10\] does not fit",
        ),
        (
            lambda t, r: ["--thermal", *t[:3], "--rgb", *r[:3], "--thermal-percentiles", 50, 10],
            r"thermal percentiles \[50.0, 10.0\] must satisfy",
        ),
        (lambda t, r: ["--thermal", *t[:3]], "--thermal and --rgb must both be given"),
        (
            lambda t, r: ["--thermal", *t[:3], "--rgb", *r[:3], "--preview", t[0].parent / "p.x"],
            "p.x: not an image file name",
        ),
        (lambda t, r: ["--bag", t[0].parent / "nothing"], "--bag needs --thermal-topic"),
        (
            lambda t, r: [
                "--bag",
                t[0].parent / "nothing",
                "--thermal-topic",
                "a",
                "--rgb-topic",
                "b",
            ],
            "nothing: no such file or directory",
        ),
        (lambda t, r: ["--thermal", t[0].parent / "x.png", "--rgb", r[0]], "x.png: no such file"),
    ],
)
def test_errors_are_one_line_with_exit_status_2_and_nothing_written(
    files, tmp_path, capsys, arguments, message
):
    output = tmp_path / "calib.yaml"
    code, _, err = run([*arguments(*files), "--board", "7x5", "-o", output], capsys)
    assert code == 2
    assert re.fullmatch(f"gifnet-calibrate: error: .*{message}.*\n", err), err
    assert not output.exists()


def test_bag_without_the_topic_names_what_it_has(tmp_path, capsys):
    bag = tmp_path / "calib_bag"
    write_calibration_bag(bag, np.random.default_rng(3))
    code, _, err = run(
        [
            "--bag",
            bag,
            "--thermal-topic",
            "/flir",
            "--rgb-topic",
            "/rgb/image",
            "--board",
            "7x5",
            "-o",
            tmp_path / "c.yaml",
        ],
        capsys,
    )
    assert code == 2
    assert (
        "no thermal topic '/flir'; topics in the bag: /rgb/image (sensor_msgs/msg/Image), "
        "/thermal/image (sensor_msgs/msg/Image)" in err
    )


def test_bad_board_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--thermal", "a", "--rgb", "b", "--board", "9by6", "-o", "c.yaml"])
    assert exit_.value.code == 2
    assert "expected COLSxROWS inner corners" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, code, expected",
    [
        (
            "fusion_node:\n  ros__parameters:\n    align.method: homography\n"
            "    align.homography: [2.0, 0.0, -3.5, 0.0, 2.0, 1.0e-7, 0.0, 0.0, 1.0]\n",
            0,
            "--align homography --homography 2 0 -3.5 0 2 0.0000001 0 0 1\n",
        ),
        (
            "/**:\n  ros__parameters:\n    align:\n      method: homography\n"
            "      homography: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]\n"
            "      crop: [4, 4, 100, 80]\n",
            0,
            "--align homography --homography 1 0 0 0 1 0 0 0 1 --crop 4 4 100 80\n",
        ),
        ("/**:\n  ros__parameters:\n    mode: grey\n", 2, "no ros__parameters with align"),
    ],
)
def test_flags_from_a_params_file(tmp_path, capsys, text, code, expected):
    """Dotted or nested keys, any node section; numbers that argparse reads as numbers."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    got, out, err = run(["--flags-from", path], capsys)
    assert got == code
    assert expected in (out if code == 0 else err)


# ---------------------------------------------------------------------------- consumers


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(5)
    thermal, rgb = write_pairs(folder, [synthetic_pair((7, 5), p, rng) for p in POSES])
    output = folder / "calib.yaml"
    args = ["--thermal", *thermal, "--rgb", *rgb, "--board", "7x5", "-o", output]
    assert main([str(a) for a in args]) == 0
    return output


def probe_pair() -> tuple[np.ndarray, np.ndarray]:
    """A textured thermal frame and a black RGB frame: with the classic_max rule the fused
    image is the aligned thermal image itself, so the warp can be read off the output."""
    ys, xs = np.mgrid[0 : THERMAL_SIZE[1], 0 : THERMAL_SIZE[0]]
    thermal = (40 + 100 * ((xs // 10 + ys // 10) % 2) + xs // 2).astype(np.uint8)
    return thermal, np.zeros((*RGB_SIZE[::-1], 3), np.uint8)


def expected_warp(path: Path, thermal: np.ndarray) -> np.ndarray:
    align = loaded(path)
    return Alignment.create(align["method"], align["homography"], align["crop"]).apply(
        thermal, RGB_SIZE[::-1]
    )


def fuse_probe_bag(tmp_path: Path, flags: list[str]) -> np.ndarray:
    """gifnet-fuse-bag (classic_max, mono8) over a one-pair bag of probe_pair() with `flags`:
    the fused image, which is the aligned thermal frame."""
    from gifnet_ros.tools import fuse_bag as bag_tool

    thermal, rgb = probe_pair()
    bag = tmp_path / "probe_bag"
    store = typestore()
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam"
    )
    with open_writer(bag, "mcap") as writer:
        for topic, pixels, encoding in (("/t", thermal, "mono8"), ("/c", rgb, "rgb8")):
            conn = writer.add_connection(topic, IMAGE, typestore=store)
            writer.write(conn, 1_000_000_000, image_cdr(header, pixels, encoding))
    out = tmp_path / "fused_bag"
    args = [str(bag), "-o", str(out), "--thermal-topic", "/t", "--rgb-topic", "/c"]
    args += ["--backend", "classic_max", "--fused-encoding", "mono8", "--no-progress"]
    assert bag_tool.main(args + flags) == 0
    ((_, msg),) = decoded(out, "/fused/image")
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)


@pytest.mark.parametrize("how", ["--params-file", "--flags-from"])
def test_the_bag_tool_applies_the_file_as_gifnet_align_does(
    calibration_file, tmp_path, capsys, how
):
    """gifnet-fuse-bag takes the file itself (--params-file), or the flags printed for it."""
    if how == "--params-file":
        flags = ["--params-file", str(calibration_file)]
    else:
        flags_code, printed, _ = run(["--flags-from", calibration_file], capsys)
        assert flags_code == 0
        flags = printed.split()
    fused = fuse_probe_bag(tmp_path, flags)
    np.testing.assert_allclose(fused, expected_warp(calibration_file, probe_pair()[0]), atol=1)
    assert fused.max() > 100  # the warp put thermal content there, not an empty frame


def test_the_bag_tool_takes_a_crop_from_the_file(tmp_path):
    """A hand-written node file with a crop: the bag tool cuts it before the homography, as
    gifnet_ros.fusion.align does for the node."""
    path = tmp_path / "crop.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    align.method: homography\n"
        "    align.homography: [2.0, 0.0, 3.0, 0.0, 2.0, -1.0, 0.0, 0.0, 1.0]\n"
        "    align.crop: [10, 6, 100, 80]\n"
    )
    fused = fuse_probe_bag(tmp_path, ["--params-file", str(path)])
    matrix = [2, 0, 3, 0, 2, -1, 0, 0, 1]
    cropped = Alignment.create("homography", matrix, [10, 6, 100, 80])
    np.testing.assert_allclose(fused, cropped.apply(probe_pair()[0], RGB_SIZE[::-1]), atol=1)
    uncropped = Alignment.create("homography", matrix)
    assert not np.array_equal(fused, uncropped.apply(probe_pair()[0], RGB_SIZE[::-1]))


def test_a_bad_params_file_is_a_usage_error(tmp_path, capsys):
    from gifnet_ros.tools import fuse_bag as bag_tool

    path = tmp_path / "bad.yaml"
    path.write_text("/**: {ros__parameters: {align.homography: [1, 2, 3]}}\n")
    with pytest.raises(SystemExit) as exit_:
        bag_tool.main(
            [
                "in",
                "-o",
                "out",
                "--thermal-topic",
                "/t",
                "--rgb-topic",
                "/c",
                "--params-file",
                str(path),
            ]
        )
    assert exit_.value.code == 2
    assert "align.homography needs 9 numbers" in capsys.readouterr().err


@pytest.mark.dds
def test_the_node_loads_the_file_as_its_params_file(calibration_file, tmp_path):
    """The node started with the file as its only --params-file (what the launch file's
    params_file:= does), in a namespace, applies the same warp as gifnet_ros.fusion.align."""
    pytest.importorskip("rclpy")
    from gifnet_ros.ros.client import FusionClient
    from gifnet_ros.ros.node_process import start_node, stop_node

    namespace = f"/calibrate_test_{os.getpid()}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dds_env(tmp_path).items():
            patch.setenv(key, value)
        process = start_node(
            namespace,
            {"backend": "classic_max", "output_encoding": "mono8"},
            tmp_path / "node.log",
            params_files=[calibration_file],
        )
        client = None
        try:
            client = FusionClient(namespace, domain_id=DOMAIN_ID)
            client.wait_for_node(STARTUP_TIMEOUT, process)
            names = ["align.method", "align.homography", "align.crop"]
            values = client.get_parameters(names)
            align = loaded(calibration_file)
            assert values["align.method"] == "homography"
            assert list(values["align.homography"]) == align["homography"]
            assert list(values["align.crop"]) == align["crop"]
            thermal, rgb = probe_pair()
            stamp = client.warm_up((thermal, rgb), STARTUP_TIMEOUT)
            msg = client.wait_fused(stamp, 1.0)[0]
        finally:
            if client is not None:
                client.close()
            stop_node(process)
    fused = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)
    np.testing.assert_allclose(fused, expected_warp(calibration_file, thermal), atol=1)
