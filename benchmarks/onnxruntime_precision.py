"""Is a lower precision worth it in ONNX Runtime's CPU provider? Prints a table.

    .venv/bin/python benchmarks/onnxruntime_precision.py

For GIFNet's two heavy operations (a 98→98 3×3 convolution over a 320×240 map and a
98→196 product over 76,800 rows, the shapes of its transformer), one-node graphs in fp32,
fp16 and bf16 are built and timed side by side (median of 5 runs, after a warm-up): whether
the CPU provider has a kernel for the type at all, and how fast it is against fp32. The
answer decides whether ``precision: auto`` may pick bf16/fp16 for the onnxruntime backend on
a CPU (gifnet_ros.fusion.precision).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

TYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
SHAPES = {"Conv": ([1, 98, 240, 320], [98, 98, 3, 3]), "MatMul": ([76800, 98], [98, 196])}


def _session(op: str, kind: str, threads: int) -> ort.InferenceSession:
    """A one-node graph of `op` in `kind`; raises when the CPU provider cannot run it."""
    shape_x, shape_w = SHAPES[op]
    weight = (np.random.default_rng(0).random(shape_w, dtype=np.float32) * 0.1).astype(np.float32)
    if kind == "fp16":
        initializer = numpy_helper.from_array(weight.astype(np.float16), "W")
    else:  # fp32, and bf16 as the upper halves of the fp32 values
        initializer = numpy_helper.from_array(weight, "W")
        if kind == "bf16":
            initializer = helper.make_tensor(
                "W",
                TYPES[kind],
                shape_w,
                (weight.view(np.uint32) >> 16).astype(np.uint16).tobytes(),
                raw=True,
            )
    node = helper.make_node(op, ["x", "W"], ["y"], **({"pads": [1] * 4} if op == "Conv" else {}))
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", TYPES[kind], shape_x)],
        [helper.make_tensor_value_info("y", TYPES[kind], None)],
        [initializer],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{'op':>7} {'type':>5} {'median ms':>10} {'vs fp32':>8}")
    for op, (shape_x, _) in SHAPES.items():
        reference = None
        for kind in TYPES:
            try:
                session = _session(op, kind, args.threads)
            except Exception as exc:  # onnxruntime's own exception types
                reason = str(exc).strip().splitlines()[0][-90:]
                print(f"{op:>7} {kind:>5} no CPU kernel: {reason}")
                continue
            x = np.random.default_rng(1).random(shape_x, dtype=np.float32)
            x = x.astype(np.float16) if kind == "fp16" else x
            session.run(None, {"x": x})
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                session.run(None, {"x": x})
                times.append(time.perf_counter() - began)
            median = statistics.median(times)
            reference = reference or median
            print(f"{op:>7} {kind:>5} {median * 1e3:10.1f} {median / reference:7.2f}x")


if __name__ == "__main__":
    main()
