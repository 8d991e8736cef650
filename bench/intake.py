"""Incident intake through the real HTTP server, against a plain INSERT of the same rows.

    .venv/bin/python bench/intake.py [--reports 2000] [--clients 8] [--workers 4]

Creates a scratch database on the configured server, loads the Foshan demo into it
(``var/demo``, built by ``make demo``), serves the app under gunicorn on a free loopback port,
and sends reports from concurrent clients with a device token. The baseline inserts the same
rows with one executemany. Also times one workflow transition against a plain UPDATE. The
scratch database is dropped at the end. Last line: JSON figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, make_url, pool, text
from sqlalchemy.orm import Session

from gridops import migrate
from gridops.auth import service as auth
from gridops.config import database_url, load_config
from gridops.demo import load_demo
from gridops.incidents.cases import transition
from gridops.localdb import free_port

COMMUNITY = "440604012001"


def scratch_database(base_url: str) -> str:
    name = f"gridops_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def drop_database(base_url: str, url: str) -> None:
    admin = create_engine(base_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def reports(session: Session, n: int, seed: int = 7) -> list[dict]:
    """``n`` reports at random points inside the bench inspector's community."""
    box = session.execute(
        text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            "(SELECT ST_Extent(geom) AS e FROM unit_grid WHERE community_code = :c "
            "AND valid_to IS NULL) s"
        ),
        {"c": COMMUNITY},
    ).one()
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    while len(out) < n:
        lon, lat = float(rng.uniform(box[0], box[2])), float(rng.uniform(box[1], box[3]))
        inside = session.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM unit_grid WHERE community_code = :c AND "
                "valid_to IS NULL AND ST_Covers(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326)))"
            ),
            {"c": COMMUNITY, "x": lon, "y": lat},
        ).scalar()
        if inside:
            out.append(
                {
                    "client_uuid": str(uuid.uuid4()),
                    "category": "E0502",
                    "lon": lon,
                    "lat": lat,
                    "accuracy_m": 6.0,
                    "captured_at": datetime.now(UTC).isoformat(),
                    "description": "bench",
                }
            )
    return out


def post(base: str, token: str, body: dict) -> int:
    request = urllib.request.Request(
        f"{base}/api/v1/incidents",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--demo", type=Path, default=Path("var/demo"))
    args = parser.parse_args()
    base_url = database_url(load_config())
    url = scratch_database(base_url)
    server = None
    try:
        migrate.upgrade(url)
        engine = create_engine(url)
        with Session(engine) as db:
            load_demo(db, args.demo, log=lambda _: None)
            user_id = auth.create_user(db, "bench.inspector", "Bench-Kiln-Harbour-83")
            grids = list(
                db.execute(
                    text("SELECT code FROM unit_grid WHERE community_code = :c"),
                    {"c": COMMUNITY},
                ).scalars()
            )
            auth.assign_role(db, user_id, "inspector", grid_codes=grids)
            _, token = auth.create_token(db, user_id, "bench", days=1)
            bodies = reports(db, args.reports)
            baseline_rows = reports(db, args.reports, seed=8)
            db.commit()

        port = free_port()
        env = {**os.environ, "GRIDOPS_DATABASE_URL": url, "GRIDOPS_LOG_LEVEL": "WARNING"}
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        server = subprocess.Popen(
            [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers),
             "gridops:create_app()"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)

        tracemalloc.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as clients:
            statuses = list(clients.map(lambda b: post(base, token, b), bodies))
        project_s = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert statuses.count(201) == len(bodies), statuses[:5]

        with engine.begin() as conn:
            category = conn.execute(text("SELECT id FROM category WHERE code = 'E0502'")).scalar()
            started = time.perf_counter()
            conn.execute(
                text(
                    "INSERT INTO incident (client_uuid, category_id, geom, reported_at, status) "
                    "VALUES (:client_uuid, :category, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326),"
                    " now(), 'reported')"
                ),
                [{**b, "category": category} for b in baseline_rows],
            )
            baseline_s = time.perf_counter() - started

        # One transition through the workflow service against a plain UPDATE of the status.
        with Session(engine) as db:
            actor = auth.load_actor(db, user_id)
            ids = list(
                db.execute(
                    text("SELECT id FROM incident WHERE reported_by = :u ORDER BY id LIMIT 200"),
                    {"u": user_id},
                ).scalars()
            )
            started = time.perf_counter()
            for case_id in ids:
                transition(db, case_id, "verify", actor, expected_version=1)
                db.commit()
            transition_ms = (time.perf_counter() - started) / len(ids) * 1000
            started = time.perf_counter()
            for case_id in ids:
                db.execute(
                    text("UPDATE incident SET updated_at = now() WHERE id = :id"), {"id": case_id}
                )
                db.commit()
            update_ms = (time.perf_counter() - started) / len(ids) * 1000
        engine.dispose()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        drop_database(base_url, url)

    figures = {
        "bench": "intake",
        "reports": len(bodies),
        "clients": args.clients,
        "workers": args.workers,
        "project_s": round(project_s, 3),
        "baseline_s": round(baseline_s, 3),
        "ratio": round(baseline_s / project_s, 3),
        "reports_per_s": round(len(bodies) / project_s, 1),
        "transition_ms": round(transition_ms, 2),
        "plain_update_ms": round(update_ms, 2),
        "peak_mb": round(peak / 2**20, 1),
    }
    print(
        f"HTTP intake: {figures['reports_per_s']} reports/s with {args.clients} clients; "
        f"plain insert {len(baseline_rows) / baseline_s:.0f} rows/s; one transition "
        f"{figures['transition_ms']} ms vs plain update {figures['plain_update_ms']} ms"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
