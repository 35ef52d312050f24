"""The package keeps to the rclpy API of ROS 2 Humble, the oldest distribution it supports.

Humble's rclpy (3.3.x) is not on the package index, so it cannot run here. Instead the
package's code (gifnet_ros/, launch/) is scanned for the rclpy API that came after Humble,
listed below from a comparison of rclpy 3.3.15 (Humble) with 7.1.6 (Jazzy) and 9.1.2 (Kilted):
their modules, public class methods and function keyword arguments, plus the context-manager
support that Jazzy added. A use is fine inside a fallback: a ``try`` whose handler catches
ImportError, AttributeError or TypeError. Names the package defines itself are its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

NEWER_MODULES = {
    "rclpy.clock_type",  # Iron; Humble: rclpy.clock.ClockType
    "rclpy.destroyable",
    "rclpy.event_handler",  # Iron; Humble: rclpy.qos_event
    "rclpy.experimental",
    "rclpy.logging_service",
    "rclpy.parameter_client",
    "rclpy.parameter_event_handler",
    "rclpy.service_introspection",
    "rclpy.subscription_content_filter_options",
    "rclpy.type_description_service",
    "rclpy.type_hash",
}
NEWER_METHODS = {
    "actual_call_time", "add_clock_callback", "add_parameter_callback",
    "add_parameter_event_callback", "add_post_set_parameters_callback",
    "add_pre_set_parameters_callback", "configure_introspection", "count_clients",
    "count_services", "create_future", "delete_parameters", "destroy_when_not_in_use",
    "expected_call_time", "get_content_filter", "get_fully_qualified_node_names", "get_now",
    "get_parameter_from_event", "get_parameters_from_event", "get_publisher_count",
    "get_ros_time_override_is_enabled", "is_cft_enabled", "load_parameter_file",
    "load_parameter_file_atomically", "on_parameter_event", "remove_clock_callback",
    "remove_done_callback", "remove_parameter_callback", "remove_parameter_event_callback",
    "remove_post_set_parameters_callback", "remove_pre_set_parameters_callback",
    "services_are_ready", "set_content_filter", "set_ros_time_override_is_enabled",
    "topic_type_hash", "track_node", "untrack_node", "wait_for_node", "wait_for_services",
}  # fmt: skip
NEWER_KEYWORDS = {
    "call": {"timeout_sec"},  # Client.call
    "create_timer": {"autostart"},
    "create_subscription": {"content_filter_options"},
    "create_node": {"enable_logger_service", "rosout_qos_profile"},
    "set_logger_level": {"detailed_error"},
}
# Since Jazzy these work as context managers (`with rclpy.init():`, `with Node(...) as n:`).
CONTEXT_MANAGERS = {
    "init", "Node", "LifecycleNode", "Context", "create_publisher", "create_subscription",
    "create_client", "create_service", "create_timer",
}  # fmt: skip
FALLBACK_ERRORS = {"ImportError", "ModuleNotFoundError", "AttributeError", "TypeError"}

# Known uses awaiting a fix, each with why; the test fails once one is gone, so the entry
# goes too. None today.
PENDING: set[tuple[str, str]] = set()


def _catches_fallback(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in FALLBACK_ERRORS for n in names)


def _called_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def newer_api_uses(source: str, own_names: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, API) for each use of post-Humble rclpy API in ``source`` outside a fallback."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            covered = guarded or any(_catches_fallback(h) for h in node.handlers)
            for child in node.body:
                visit(child, covered)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if not guarded:
            found.extend(_uses(node, own_names))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return found


def _uses(node: ast.AST, own_names: frozenset[str]) -> list[tuple[int, str]]:
    if isinstance(node, ast.ImportFrom) and node.module:
        modules = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        return [(node.lineno, m) for m in sorted(modules & NEWER_MODULES)]
    if isinstance(node, ast.Import):
        return [(node.lineno, a.name) for a in node.names if a.name in NEWER_MODULES]
    if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS - own_names:
        return [(node.lineno, node.attr)]
    if isinstance(node, ast.Call) and (name := _called_name(node)) in NEWER_KEYWORDS:
        keywords = {k.arg for k in node.keywords} & NEWER_KEYWORDS[name]
        return [(node.lineno, f"{name}({k}=...)") for k in sorted(keywords)]
    if isinstance(node, ast.With | ast.AsyncWith):
        return [
            (node.lineno, f"with {name}(...)")
            for item in node.items
            if isinstance(item.context_expr, ast.Call)
            and (name := _called_name(item.context_expr)) in CONTEXT_MANAGERS
        ]
    return []


def _package_files() -> list[Path]:
    return sorted([*(ROOT / "gifnet_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")])


def _own_names(files: list[Path]) -> frozenset[str]:
    """Functions and methods the package defines (FusionClient.wait_for_node is its own)."""
    return frozenset(
        node.name
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def test_package_uses_no_rclpy_api_newer_than_humble_without_a_fallback():
    files = _package_files()
    own = _own_names(files)
    uses = {
        (str(path.relative_to(ROOT)), api, line)
        for path in files
        for line, api in newer_api_uses(path.read_text(), own)
    }
    found = {(path, api) for path, api, _ in uses}
    assert not found - PENDING, sorted(uses)
    assert found >= PENDING, f"fixed, drop from PENDING: {sorted(PENDING - found)}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from rclpy.event_handler import QoSSubscriptionMatchedInfo", ["rclpy.event_handler"]),
        ("import rclpy.clock_type", ["rclpy.clock_type"]),
        ("from rclpy import type_hash", ["rclpy.type_hash"]),
        ("node.add_post_set_parameters_callback(f)", ["add_post_set_parameters_callback"]),
        ("sub.get_publisher_count()", ["get_publisher_count"]),
        ("client.call(request, timeout_sec=2.0)", ["call(timeout_sec=...)"]),
        ("node.create_timer(1.0, f, autostart=False)", ["create_timer(autostart=...)"]),
        ("with rclpy.init():\n    pass", ["with init(...)"]),
        ("with Node('n') as node:\n    pass", ["with Node(...)"]),
        # Humble API, or a newer one behind a fallback: fine.
        ("from rclpy.qos_event import SubscriptionEventCallbacks", []),
        ("node.create_timer(1.0, f)\nexecutor.spin_once(timeout_sec=0.1)", []),
        ("try:\n    from rclpy.event_handler import X\nexcept ImportError:\n    X = None", []),
        (
            "try:\n    n = sub.get_publisher_count()\nexcept AttributeError:\n"
            "    n = node.count_publishers(topic)",
            [],
        ),
        (
            "try:\n    sub.get_publisher_count()\nexcept ValueError:\n    pass",
            ["get_publisher_count"],
        ),
    ],
)
def test_scanner_finds_newer_api_and_accepts_fallbacks(source, expected):
    assert [api for _, api in newer_api_uses(source)] == expected
