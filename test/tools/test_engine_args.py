"""The engine flags the tools share become one EngineOptions, field by field."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path

import pytest

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.options import EngineOptions
from gifnet_ros.tools.engine_args import add_engine_arguments, engine_options


def _options(argv: list[str]) -> EngineOptions:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return engine_options(parser.parse_args(argv))


def test_no_flags_are_the_defaults():
    assert _options([]) == EngineOptions()


def test_every_flag_reaches_its_field():
    argv = [
        "--weights", "w.pth", "--network", "tim_light", "--backend", "onnxruntime",
        "--device", "cuda:1", "--precision", "fp16", "--onnx-model", "m.onnx",
        "--providers", "tensorrt, cuda,cpu", "--threads", "3", "--compile",
        "--max-pixels", "4096", "--inference-scale", "0.25", "--restore", "bilinear",
    ]  # fmt: skip
    assert _options(argv) == EngineOptions(
        weights="w.pth",
        network="tim_light",
        backend="onnxruntime",
        device="cuda:1",
        precision="fp16",
        onnx_model="m.onnx",
        providers=("tensorrt", "cuda", "cpu"),
        threads=3,
        compile=True,
        max_pixels=4096,
        inference_scale=0.25,
        restore="bilinear",
    )


def test_lists_become_tuples():
    """Options compare equal whether a caller gave lists (argparse's nargs) or tuples."""
    listed = EngineOptions(providers=["cpu"], thermal_range=[0, 100], thermal_percentiles=[2, 98])
    assert listed == EngineOptions(
        providers=("cpu",), thermal_range=(0, 100), thermal_percentiles=(2, 98)
    )
    assert EngineOptions().providers is None


def test_engine_takes_options_or_fields():
    """FusionEngine(options), FusionEngine(options, field=...) and the keyword form agree."""
    rule = FusionEngine(EngineOptions(backend="classic_max"), mode="grey")
    assert (rule.backend, rule.mode, rule.device.type) == ("classic_max", "grey", "cpu")
    positional = FusionEngine(None, "cpu", "fp32", "medical", backend="classic_average")
    assert (positional.precision, positional.mode) == ("fp32", "medical")
    # A field named with the options replaces theirs, even with its default value.
    grey = EngineOptions(backend="classic_max", mode="grey")
    assert FusionEngine(grey).mode == "grey"
    assert FusionEngine(grey, mode="thermal_rgb").mode == "thermal_rgb"
    assert FusionEngine(grey, "cpu").device.type == "cpu"
    with pytest.raises(TypeError, match="weights twice"):
        FusionEngine("a.pth", weights="b.pth")
    with pytest.raises(TypeError):
        FusionEngine(no_such_option=1)
    with pytest.raises(TypeError):
        FusionEngine(None, "cpu", "fp32", "grey", "percentile")  # the rest only by name
    with pytest.raises(ValueError, match="threads must be at least 1"):
        FusionEngine(EngineOptions(backend="classic_max", threads=0))
    assert EngineOptions(weights=Path("w.pth")).weights == Path("w.pth")


def test_engine_arguments_are_the_option_fields():
    """FusionEngine's signature names every EngineOptions field with its type, so help() and
    type checkers show them; a field added to one and not the other fails here."""
    parameters = inspect.signature(FusionEngine.__init__).parameters
    arguments = {p.name: p.annotation for p in parameters.values() if p.name != "self"}
    assert arguments.pop("options") == "EngineOptions | str | Path | None"
    assert arguments == {f.name: f.type for f in dataclasses.fields(EngineOptions)}
    positional = [p.name for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["self", "options", "device", "precision", "mode"]


def test_default_batch_follows_the_device():
    """No --batch: one pair per call on the CPU (a batch only holds more memory there)."""
    assert FusionEngine(backend="classic_max").default_batch() == 1
