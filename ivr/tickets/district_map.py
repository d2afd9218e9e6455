"""The situation map's shapes: the gazetteer's districts drawn as a map, from a
GeoJSON file the deployment supplies (``[situation] map``), or, without one,
as a grid of equal squares.

The file is a FeatureCollection; each Feature's ``properties.name`` is a
district of the gazetteer (its full name, 西湖区) and its geometry a Polygon
or MultiPolygon in longitude and latitude (any plane coordinates also do:
the map is drawn, not placed on tiles, so a hand-drawn schematic is fine).
Each problem (broken JSON, a feature that is not a district of the
gazetteer, a district given twice, a ring not closed or with too few points)
is reported as ``file:line: message``; the file as a whole is refused.

The shapes are projected once, at load, to SVG paths in a box of
``WIDTH`` px wide (longitude scaled by the cosine of the middle latitude,
north up), so the browser draws them without any map library or network.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.toml_lines import located

WIDTH = 1000.0  # px of the drawn map; its height follows the shapes
MARGIN = 10.0
GRID_CELL = 150.0  # px of one district's square in the grid layout
GRID_GAP = 10.0


class DistrictMapError(ValueError):
    """The map file cannot be used; each of ``problems`` names file and line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class DistrictShape:
    name: str
    path: str  # SVG path data in the layout's box
    label: tuple[float, float]  # where its name is written


@dataclass(frozen=True)
class DistrictLayout:
    kind: str  # "geojson" (the deployment's file) or "grid" (no file)
    source: str  # the file, or "" for the grid
    width: float
    height: float
    shapes: tuple[DistrictShape, ...]
    missing: tuple[str, ...]  # districts of the gazetteer the file does not draw
    # what was loaded (the file's sha256, 12 hex digits; "grid"): a page whose map
    # is of another version fetches the shapes again (the file reloads)
    version: str = "grid"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "version": self.version,
            "width": round(self.width, 1),
            "height": round(self.height, 1),
            "districts": [
                {"name": s.name, "path": s.path, "label": [round(v, 1) for v in s.label]}
                for s in self.shapes
            ],
            "missing": list(self.missing),
        }


Ring = list[tuple[float, float]]


def grid_layout(districts: Sequence[str]) -> DistrictLayout:
    """Every district as a square, in the gazetteer's order, rows of ceil(sqrt(n))."""
    columns = max(1, math.ceil(math.sqrt(len(districts))))
    rows = max(1, math.ceil(len(districts) / columns))
    step = GRID_CELL + GRID_GAP
    shapes = []
    for i, name in enumerate(districts):
        x, y = MARGIN + (i % columns) * step, MARGIN + (i // columns) * step
        path = f"M{x:g} {y:g}h{GRID_CELL:g}v{GRID_CELL:g}h{-GRID_CELL:g}Z"
        shapes.append(DistrictShape(name, path, (x + GRID_CELL / 2, y + GRID_CELL / 2)))
    return DistrictLayout(
        kind="grid",
        source="",
        width=2 * MARGIN + columns * step - GRID_GAP,
        height=2 * MARGIN + rows * step - GRID_GAP,
        shapes=tuple(shapes),
        missing=(),
    )


def load_district_map(path: Path, districts: Sequence[str]) -> DistrictLayout:
    """The districts drawn by the GeoJSON file at ``path``; DistrictMapError
    (every problem, ``file:line: message``) when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DistrictMapError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise DistrictMapError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise DistrictMapError([f"{path}: not UTF-8 text ({exc.reason})"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = located(path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
        raise DistrictMapError([where]) from None
    except RecursionError:
        raise DistrictMapError([f"{path}: not valid JSON: nested too deep"]) from None
    problems: list[str] = []
    rings_of = _features(data, text, path, set(districts), problems)
    if problems:
        raise DistrictMapError(problems)
    if not rings_of:
        raise DistrictMapError([located(path, 1, "draws no district")])
    width, height, project = _projection(
        [p for rings in rings_of.values() for ring in rings for p in ring]
    )
    shapes = []
    for name, rings in rings_of.items():
        drawn = [[project(p) for p in ring] for ring in rings]
        path_data = "".join(
            "M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in ring[:-1]) + "Z" for ring in drawn
        )
        shapes.append(DistrictShape(name, path_data, _label(drawn)))
    return DistrictLayout(
        kind="geojson",
        source=str(path),
        width=width,
        height=height,
        shapes=tuple(shapes),
        missing=tuple(d for d in districts if d not in rings_of),
        version=hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
    )


def _features(
    data: Any, text: str, path: Path, districts: set[str], problems: list[str]
) -> dict[str, list[Ring]]:
    """Each district's outer rings (holes are not drawn) from the collection."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        problems.append(located(path, 1, 'want a GeoJSON object with "type": "FeatureCollection"'))
        return {}
    features = data.get("features")
    if not isinstance(features, list):
        line = next((n for n, t in enumerate(text.splitlines(), 1) if '"features"' in t), None)
        problems.append(located(path, line, '"features" must be a list'))
        return {}
    found: dict[str, list[Ring]] = {}
    after = 0  # the features are in the file in order: each is looked for after the last
    for index, feature in enumerate(features):
        what = f"features[{index}]"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            problems.append(located(path, None, f'{what}: want an object with "type": "Feature"'))
            continue
        properties = feature.get("properties")
        name = properties.get("name") if isinstance(properties, dict) else None
        if not isinstance(name, str) or not name.strip():
            problems.append(located(path, None, f'{what}: no "name" in its "properties"'))
            continue
        line = _line_of_name(text, name, after)
        after = line + 1 if line is not None else after
        if name not in districts:
            known = "、".join(sorted(districts))
            problems.append(
                located(
                    path, line, f"{what}: {name!r} is not a district of the gazetteer ({known})"
                )
            )
            continue
        if name in found:
            problems.append(located(path, line, f"{what}: {name} is drawn twice"))
            continue
        rings = _rings(feature.get("geometry"), f"{what} ({name})", path, line, problems)
        if rings:
            found[name] = rings
    return found


def _line_of_name(text: str, name: str, after: int) -> int | None:
    """The first line at or after ``after`` holding the name as a JSON string
    (written as is, or \\u-escaped)."""
    lines = text.splitlines()
    for written in (json.dumps(name, ensure_ascii=False), json.dumps(name)):
        for number in range(max(after, 1), len(lines) + 1):
            if written in lines[number - 1]:
                return number
    return None


def _rings(
    geometry: Any, what: str, path: Path, line: int | None, problems: list[str]
) -> list[Ring]:
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        problems.append(
            located(path, line, f'{what}: the geometry must be a "Polygon" or "MultiPolygon"')
        )
        return []
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if geometry["type"] == "Polygon" else coordinates
    if not isinstance(polygons, list) or not polygons:
        problems.append(located(path, line, f"{what}: no coordinates"))
        return []
    rings: list[Ring] = []
    for n, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not polygon:
            problems.append(located(path, line, f"{what}: polygon {n + 1} has no rings"))
            continue
        ring = _ring(polygon[0])  # the outer ring; holes are not drawn
        if ring is None:
            problems.append(
                located(path, line, f"{what}: polygon {n + 1}: a ring is a list of [x, y] numbers")
            )
        elif len(ring) < 4:
            problems.append(
                located(path, line, f"{what}: polygon {n + 1}: a ring needs 4 points or more")
            )
        elif ring[0] != ring[-1]:
            problems.append(
                located(
                    path,
                    line,
                    f"{what}: polygon {n + 1}: the ring is not closed (the last "
                    f"point must be the first, {list(ring[0])})",
                )
            )
        else:
            rings.append(ring)
    return rings


def _ring(value: Any) -> Ring | None:
    if not isinstance(value, list):
        return None
    ring: Ring = []
    for point in value:
        if (
            not isinstance(point, list)
            or len(point) < 2
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in point[:2]
            )
        ):
            return None
        ring.append((float(point[0]), float(point[1])))
    return ring


def _projection(
    points: list[tuple[float, float]],
) -> tuple[float, float, Any]:
    """The box and the function from (x, y) of the file to px: longitude
    shortened by cos(middle latitude) when the points are longitudes and
    latitudes; north (larger y) up."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lon_lat = all(-180 <= x <= 180 for x in xs) and all(-90 <= y <= 90 for y in ys)
    shrink = math.cos(math.radians((min(ys) + max(ys)) / 2)) if lon_lat else 1.0
    span_x = max((max(xs) - min(xs)) * shrink, 1e-9)
    span_y = max(max(ys) - min(ys), 1e-9)
    scale = (WIDTH - 2 * MARGIN) / span_x
    left, top = min(xs), max(ys)

    def project(p: tuple[float, float]) -> tuple[float, float]:
        return (MARGIN + (p[0] - left) * shrink * scale, MARGIN + (top - p[1]) * scale)

    return WIDTH, span_y * scale + 2 * MARGIN, project


def _label(rings: list[Ring]) -> tuple[float, float]:
    """The centroid of the largest ring (by area)."""
    best: tuple[float, float, float] = (0.0, *rings[0][0])
    for ring in rings:
        area = cx = cy = 0.0
        for (x0, y0), (x1, y1) in itertools.pairwise(ring):
            cross = x0 * y1 - x1 * y0
            area += cross
            cx += (x0 + x1) * cross
            cy += (y0 + y1) * cross
        if abs(area) > abs(best[0]) and area != 0:
            best = (area, cx / (3 * area), cy / (3 * area))
    return best[1], best[2]
