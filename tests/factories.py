"""Small synthetic hierarchies near Foshan, written to GIS files by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
from shapely.geometry import Point, box
from shapely.geometry.base import BaseGeometry

# City 440600 is two districts side by side; district 440604 has one town with two
# communities (west and east halves). About 2 km x 1.1 km per community.
CITY = box(113.00, 23.00, 113.08, 23.02)
D604 = box(113.00, 23.00, 113.04, 23.02)
D605 = box(113.04, 23.00, 113.08, 23.02)
COMMUNITY_W = box(113.00, 23.00, 113.02, 23.02)
COMMUNITY_E = box(113.02, 23.00, 113.04, 23.02)


def area_rows() -> list[dict[str, Any]]:
    return [
        {
            "code": "440600",
            "name": "佛山市",
            "level": "city",
            "parent_code": None,
            "geometry": CITY,
        },
        {
            "code": "440604",
            "name": "禅城区",
            "level": "district",
            "parent_code": "440600",
            "geometry": D604,
        },
        {
            "code": "440605",
            "name": "南海区",
            "level": "district",
            "parent_code": "440600",
            "geometry": D605,
        },
        {
            "code": "440604001",
            "name": "祖庙街道",
            "level": "town",
            "parent_code": "440604",
            "geometry": D604,
        },
        {
            "code": "440604001001",
            "name": "西社区",
            "level": "community",
            "parent_code": "440604001",
            "geometry": COMMUNITY_W,
        },
        {
            "code": "440604001002",
            "name": "东社区",
            "level": "community",
            "parent_code": "440604001",
            "geometry": COMMUNITY_E,
        },
    ]


def write(path: Path, rows: list[dict[str, Any]], *, crs: Any = 4326, **kwargs: Any) -> Path:
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    frame.to_file(path, engine="pyogrio", **kwargs)
    return path


def replace(rows: list[dict[str, Any]], which: str, **changes: Any) -> list[dict[str, Any]]:
    return [{**r, **changes} if r["code"] == which else r for r in rows]


def strip_grid(community: BaseGeometry, code: str, n: int = 4) -> list[dict[str, Any]]:
    """Cut a box community into ``n`` vertical strips as unit grids 001..n."""
    x0, y0, x1, y1 = community.bounds
    step = (x1 - x0) / n
    return [
        {"code": f"{code}{i + 1:03d}", "geometry": box(x0 + i * step, y0, x0 + (i + 1) * step, y1)}
        for i in range(n)
    ]


def uscc(serial: int, district: str = "440604") -> str:
    """A valid unified social credit code (GB 32100 check character included)."""
    from gridops.overlays.uscc import check_character

    first17 = f"91{district}MA{serial:07d}"
    return first17 + check_character(first17)


def enterprise(lon: float, lat: float, serial: int = 1, name: str = "甲公司") -> dict[str, Any]:
    return {"uscc": uscc(serial), "name": name, "geometry": Point(lon, lat)}
