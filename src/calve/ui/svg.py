"""Plots and the lineage graph as inline SVG, rendered on the server: no JavaScript, nothing fetched.

Every text that reaches the SVG (names, labels, titles) goes through `escape`; the result is
`Markup`, so that templates insert it as is and escape nothing twice. Styles are CSS classes
(static/calve.css), so the pages keep one look.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from markupsafe import Markup, escape

UTC = dt.UTC


@dataclass(frozen=True)
class Series:
    """One named series of (x, y) points; `style` is a CSS class (series-a, series-b, ...)."""

    name: str
    points: list[tuple[float, float]]
    style: str = "series-a"
    lines: bool = True  # join the points (False: a scatter plot)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def number_label(value: float) -> str:
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def time_label(value: float) -> str:
    return dt.datetime.fromtimestamp(value, UTC).strftime("%m-%d %H:%M")


def time_labels(span_s: float) -> Callable[[float], str]:
    """Time labels (UTC) precise enough to tell apart the ticks of an axis spanning `span_s`."""
    pattern = "%H:%M:%S" if span_s < 600 else "%m-%d %H:%M" if span_s < 14 * 86400 else "%Y-%m-%d"
    return lambda value: dt.datetime.fromtimestamp(value, UTC).strftime(pattern)


def chart(
    series: Iterable[Series],
    *,
    title: str,
    y_label: str,
    x_format: Callable[[float], str] | None = None,  # default: times, as precise as the span needs
    y_format: Callable[[float], str] = number_label,
    width: int = 760,
    height: int = 260,
) -> Markup:
    """A line or scatter chart of one or more series, sharing the axes; y starts at 0."""
    shown = [s for s in series if s.points]
    left, right, top, bottom = 64, 16, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text class="chart-title" x="{left}" y="16">{escape(title)}</text>',
    ]
    if not shown:
        parts.append(
            f'<text class="chart-empty" x="{left}" y="{top + plot_h / 2:.0f}">no data yet</text></svg>'
        )
        return Markup("".join(parts))
    xs = [x for s in shown for x, _ in s.points]
    ys = [y for s in shown for _, y in s.points]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if x_format is None:
        x_format = time_labels(x_high - x_low)
    y_low, y_high = min(0.0, min(ys)), max(ys)
    if y_high == y_low:
        y_high = y_low + 1

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    for tick in _ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_format(tick))}</text>"
        )
    for tick in _ticks(x_low, x_high):
        x = px(tick)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{escape(x_format(tick))}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="12" y="{top + plot_h / 2:.0f}" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.0f})" text-anchor="middle">{escape(y_label)}</text>'
    )
    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    for index, s in enumerate(shown):
        points = sorted(s.points)
        style = escape(s.style)
        if s.lines and len(points) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            parts.append(f'<polyline class="line {style}" points="{path}"/>')
        for x, y in points:
            parts.append(
                f'<circle class="dot {style}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3">'
                f"<title>{escape(s.name)}: {escape(x_format(x))}: {escape(y_format(y))}</title></circle>"
            )
        legend_x = left + 8 + index * 180
        parts.append(
            f'<rect class="legend {style}" x="{legend_x}" y="{height - 14}" width="10" height="10"/>'
            f'<text class="legend-text" x="{legend_x + 14}" y="{height - 5}">{escape(s.name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def duration_label(seconds: float) -> str:
    if abs(seconds) >= 86400:
        return f"{seconds / 86400:.3g}d"
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:.3g}h"
    if abs(seconds) >= 60:
        return f"{seconds / 60:.3g}m"
    return f"{seconds:.3g}s"


# ---- the lineage graph ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    key: str  # unique: "workflow:ID" or "table:NAME"
    label: str
    kind: str  # "workflow" or "table"
    href: str
    status: str = ""  # a workflow's last run status (a CSS class)


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)  # (from key, to key)

    def add(self, node: Node) -> None:
        self.nodes.setdefault(node.key, node)

    def layers(self) -> list[list[str]]:
        """Nodes in layers: each node one layer right of its furthest upstream node (cycles cut)."""
        upstream: dict[str, set[str]] = {key: set() for key in self.nodes}
        for src, dst in self.edges:
            upstream[dst].add(src)
        depth: dict[str, int] = {}

        def visit(key: str, path: frozenset[str]) -> int:
            if key in depth:
                return depth[key]
            parents = [p for p in upstream[key] if p not in path]
            depth[key] = 1 + max((visit(p, path | {key}) for p in parents), default=-1)
            return depth[key]

        for key in sorted(self.nodes):
            visit(key, frozenset())
        layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for key in sorted(self.nodes, key=lambda k: (self.nodes[k].kind, self.nodes[k].label)):
            layers[depth[key]].append(key)
        return layers


def lineage(graph: Graph) -> Markup:
    """The graph left to right, layer by layer: tables as rounded boxes, workflows as boxes; links."""
    layers = graph.layers()
    if not layers:
        return Markup('<p class="empty">no workflows and no tables yet</p>')
    box_w, box_h, gap_x, gap_y, margin = 200, 34, 70, 18, 16
    tallest = max(len(layer) for layer in layers)
    width = margin * 2 + len(layers) * box_w + (len(layers) - 1) * gap_x
    height = margin * 2 + tallest * box_h + (tallest - 1) * gap_y
    where: dict[str, tuple[float, float]] = {}
    for column, layer in enumerate(layers):
        offset = (tallest - len(layer)) * (box_h + gap_y) / 2
        for row, key in enumerate(layer):
            where[key] = (margin + column * (box_w + gap_x), margin + offset + row * (box_h + gap_y))
    parts = [
        f'<svg class="lineage" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="lineage of workflows and tables">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>',
    ]
    for src, dst in sorted(graph.edges):
        (x1, y1), (x2, y2) = where[src], where[dst]
        start_x, start_y, end_x, end_y = x1 + box_w, y1 + box_h / 2, x2, y2 + box_h / 2
        if end_x <= start_x:  # an edge of a cycle, drawn back to the left
            start_x, end_x = x1, x2 + box_w
        bend = max(abs(end_x - start_x) / 2, 30)
        parts.append(
            f'<path class="edge" marker-end="url(#arrow)" d="M {start_x:.1f} {start_y:.1f} C '
            f'{start_x + bend:.1f} {start_y:.1f}, {end_x - bend:.1f} {end_y:.1f}, {end_x:.1f} {end_y:.1f}"/>'
        )
    for key, (x, y) in where.items():
        node = graph.nodes[key]
        label = node.label if len(node.label) <= 26 else node.label[:25] + "…"
        radius = 14 if node.kind == "table" else 3
        parts.append(
            f'<a href="{escape(node.href)}" class="node-link"><g class="node {escape(node.kind)} '
            f'{escape(node.status)}" data-node="{escape(node.key)}">'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="{radius}"/>'
            f'<text x="{x + box_w / 2:.1f}" y="{y + box_h / 2 + 4:.1f}" text-anchor="middle">'
            f"{escape(label)}</text>"
            f"<title>{escape(node.kind)} {escape(node.label)}</title></g></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
