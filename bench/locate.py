"""Locate 1,000,000 points in the Chancheng unit grids: the project's batch path against the
obvious geopandas way, same process, same data, both from points stored in PostGIS to each
point's grid stored back.

    .venv/bin/python bench/locate.py [--points 1000000] [--sql]

Needs the demo loaded (``make demo`` or ``gridops demo load``). The project's path is
``assign_grids`` (one polygon-outer LATERAL update in PostGIS). ``--strtree`` also times the
in-process alternative (read the points out, GEOS STRtree, write back). Last line: JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from gridops.config import database_url, load_config
from gridops.grids.locate import NO_GRID, GridIndex, assign_grids

TABLE = "bench_point"
DISTRICT = "440604"


def make_points(engine: Engine, n: int, seed: int = 42) -> None:
    """``n`` points, uniform over the district's bounding box (some fall outside every grid)."""
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(
            text(
                f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, geom geometry(Point, 4326), "
                "grid_id bigint)"
            )
        )
        box = conn.execute(
            text(
                "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) "
                "FROM admin_area WHERE code = :code"
            ),
            {"code": DISTRICT},
        ).one()
        if box[0] is None:
            raise SystemExit("no Chancheng district: load the demo first (make demo)")
        rng = np.random.default_rng(seed)
        lon = rng.uniform(box[0], box[2], n)
        lat = rng.uniform(box[1], box[3], n)
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {TABLE} (id, geom) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((i + 1, f"SRID=4326;POINT({lon[i]:.8f} {lat[i]:.8f})"))
        conn.execute(text(f"CREATE INDEX ON {TABLE} USING gist (geom)"))
        conn.execute(text(f"ANALYZE {TABLE}"))


def reset(engine: Engine) -> None:
    """Clear the stored grids and the dead rows that clearing leaves, so runs start equal."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"UPDATE {TABLE} SET grid_id = NULL"))
        conn.execute(text(f"VACUUM ANALYZE {TABLE}"))


def project_path(engine: Engine) -> None:
    with Session(engine) as session:
        assign_grids(session, TABLE)
        session.commit()


def baseline_geopandas(engine: Engine) -> None:
    """Read both layers with geopandas, ``sjoin``, write the ids back (to_sql + UPDATE)."""
    started = time.perf_counter()
    points = gpd.read_postgis(f"SELECT id, geom FROM {TABLE}", engine, geom_col="geom")
    grids = gpd.read_postgis(
        "SELECT id AS grid_id, code, geom FROM unit_grid WHERE valid_to IS NULL",
        engine,
        geom_col="geom",
    )
    read = time.perf_counter()
    joined = gpd.sjoin(points, grids, how="inner", predicate="intersects")
    # Border points match two grids: keep the smaller code, as the project does.
    joined = joined.sort_values(["id", "code"]).drop_duplicates("id")
    joined_at = time.perf_counter()
    joined[["id", "grid_id"]].to_sql(
        "bench_located", engine, if_exists="replace", index=False, chunksize=50_000
    )
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {TABLE} p SET grid_id = l.grid_id FROM bench_located l WHERE p.id = l.id")
        )
        conn.execute(text("DROP TABLE bench_located"))
    print(
        f"  geopandas phases: read {read - started:.1f} s, sjoin {joined_at - read:.1f} s, "
        f"write back {time.perf_counter() - joined_at:.1f} s"
    )


def strtree_in_process(engine: Engine) -> None:
    """COPY the points out, locate them with the GEOS STRtree, COPY back, UPDATE."""
    with Session(engine) as session:
        raw = session.connection().connection.driver_connection
        buffer = io.BytesIO()
        with raw.cursor() as cursor:
            with cursor.copy(
                f"COPY (SELECT id, ST_X(geom), ST_Y(geom) FROM {TABLE}) TO STDOUT"
            ) as copy:
                for chunk in copy:
                    buffer.write(chunk)
            buffer.seek(0)
            points = pd.read_csv(buffer, sep="\t", header=None, names=["id", "lon", "lat"])
            grids = GridIndex.load(session).locate(
                points["lon"].to_numpy(), points["lat"].to_numpy()
            )
            found = points.loc[grids != NO_GRID, ["id"]].assign(grid_id=grids[grids != NO_GRID])
            cursor.execute("CREATE TEMP TABLE located (id bigint, grid_id bigint) ON COMMIT DROP")
            with cursor.copy("COPY located (id, grid_id) FROM STDIN") as copy:
                copy.write(found.to_csv(sep="\t", header=False, index=False).encode())
        session.execute(
            text(f"UPDATE {TABLE} p SET grid_id = l.grid_id FROM located l WHERE p.id = l.id")
        )
        session.commit()


def timed(name: str, engine: Engine, run: Callable[[Engine], None]) -> dict[str, Any]:
    reset(engine)
    tracemalloc.start()
    started = time.perf_counter()
    run(engine)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with engine.connect() as conn:
        located = conn.execute(text(f"SELECT count(grid_id) FROM {TABLE}")).scalar()
        digest = conn.execute(
            text(
                f"SELECT md5(string_agg(id || ':' || coalesce(grid_id, 0), ',' ORDER BY id)) "
                f"FROM {TABLE}"
            )
        ).scalar()
    print(f"{name:10s} {seconds:8.2f} s  peak {peak / 2**20:7.1f} MB  located {located}")
    return {"seconds": seconds, "peak_mb": peak / 2**20, "located": located, "digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--strtree", action="store_true", help="also time the in-process path")
    args = parser.parse_args()
    engine = create_engine(database_url(load_config()))
    with engine.connect() as conn:
        grids = conn.execute(text("SELECT count(*) FROM unit_grid WHERE valid_to IS NULL")).scalar()
    print(f"{args.points} points, {grids} unit grids")
    make_points(engine, args.points)
    project = timed("project", engine, project_path)
    baseline = timed("geopandas", engine, baseline_geopandas)
    if project["digest"] != baseline["digest"]:
        raise SystemExit("the two paths stored different grids")
    figures: dict[str, Any] = {
        "bench": "locate",
        "points": args.points,
        "grids": grids,
        "project_s": round(project["seconds"], 3),
        "baseline_s": round(baseline["seconds"], 3),
        "ratio": round(baseline["seconds"] / project["seconds"], 2),
        "peak_mb": round(project["peak_mb"], 1),
        "baseline_peak_mb": round(baseline["peak_mb"], 1),
    }
    if args.strtree:
        in_process = timed("strtree", engine, strtree_in_process)
        figures["strtree_s"] = round(in_process["seconds"], 3)
        figures["strtree_matches"] = in_process["digest"] == project["digest"]
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {TABLE}"))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
