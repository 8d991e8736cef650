"""The users of ``bench/load.py``: run by locust in a process of its own (gevent patches the
standard library there, never in the bench, which talks to PostgreSQL).

    GRIDOPS_LOAD_FIXTURE=fixture.json GRIDOPS_LOAD_LEDGER=ledger.json \\
        locust -f bench/locustfile.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:PORT

``bench/load.py`` writes the fixture (device tokens of the demo's people, points inside each
inspector's grids, extents to look at, who may be assigned in each grid) and reads the ledger
this file writes when locust quits: every client UUID a tablet sent, and the answers it got,
so that the bench can check the database against what the tablets were told.

Each user acts like its page does: requests a page makes together go out together (the
tablet's layers, the board's refresh, a map's tiles, six at a time like a browser), and the
user then thinks for ``GRIDOPS_LOAD_WAIT`` seconds ("min,max"; "0,0" for a closed loop):
tablets and maps as given, dispatchers three times (the board refreshes itself every 30 s),
KPI readers ten times as long (a dashboard is read, not clicked through).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gevent
from gevent.pool import Pool
from locust import FastHttpUser, between, constant, events, task

FIXTURE: dict[str, Any] = json.loads(Path(os.environ["GRIDOPS_LOAD_FIXTURE"]).read_text())
LEDGER_PATH = Path(os.environ["GRIDOPS_LOAD_LEDGER"])
_low, _high = (float(v) for v in os.environ.get("GRIDOPS_LOAD_WAIT", "1,3").split(","))


def think(factor: float = 1.0) -> Any:
    """Think time: ``GRIDOPS_LOAD_WAIT`` times ``factor`` (a board or a dashboard is read for
    longer than a map is looked at)."""
    return constant(0) if _high <= 0 else between(_low * factor, _high * factor)


# The baseline run stops after this many requests (0: run for the given time).
MAX_REQUESTS = int(os.environ.get("GRIDOPS_LOAD_MAX_REQUESTS", "0"))
PHOTO = Path(FIXTURE["photo"]).read_bytes()
TIMEOUT = 30.0  # seconds; the tablet's outbox waits longer, but a map user gives up sooner
BROWSER_PARALLEL = 6  # connections per host of an HTTP/1.1 browser

# What the tablets were told, for the bench's database check.
LEDGER: dict[str, Any] = {
    "acked": {},  # client UUID -> {"created": n 201s, "replayed": n 200s, "photos": n}
    "unacked": set(),  # sent, never acknowledged (a later sync of the same run may still land it)
    "refused": {},  # status -> count, for tablet answers other than 200/201
    "stale_assign": 0,  # 412: another dispatcher was first (expected, not an error)
    "final_assign": 0,  # 409: the case was closed meanwhile
    "requests": 0,
    "first_start": None,
    "last_end": None,
}


@events.request.add_listener
def _count(start_time: float, response_time: float, **_: Any) -> None:
    LEDGER["requests"] += 1
    end = start_time + response_time / 1000
    if LEDGER["first_start"] is None or start_time < LEDGER["first_start"]:
        LEDGER["first_start"] = start_time
    if LEDGER["last_end"] is None or end > LEDGER["last_end"]:
        LEDGER["last_end"] = end


@events.quitting.add_listener
def _write_ledger(**_: Any) -> None:
    LEDGER_PATH.write_text(
        json.dumps({**LEDGER, "unacked": sorted(LEDGER["unacked"] - set(LEDGER["acked"]))})
    )


def _round_robin(items: list[Any]) -> Any:
    cycle = itertools.cycle(items)
    return lambda: next(cycle)


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _viewport(extent: list[float], zoom: float, width_px: int, height_px: int) -> list[float]:
    """A screen of ``width_px`` x ``height_px`` at ``zoom`` centred somewhere in ``extent``."""
    lon = random.uniform(extent[0], extent[2])
    lat = random.uniform(extent[1], extent[3])
    metres_per_px = 156_543.03 * math.cos(math.radians(lat)) / 2**zoom
    half_w = width_px * metres_per_px / 2 / (111_320 * math.cos(math.radians(lat)))
    half_h = height_px * metres_per_px / 2 / 110_574
    return [lon - half_w, lat - half_h, lon + half_w, lat + half_h]


def _tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    n = 2**zoom
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


class Tablet(FastHttpUser):
    """An inspector's tablet: new reports go into the outbox, which is flushed in order; a
    report whose answer never came stays and is sent again at the next sync, and now and then
    a tablet resends a report that was already acknowledged (the answer was lost on the way),
    sometimes twice at once (a sync started while the previous one still runs)."""

    weight = 4
    wait_time = think()
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    next_account = staticmethod(_round_robin(FIXTURE["tablets"]))

    def on_start(self) -> None:
        self.account = self.next_account()
        self.headers = _headers(self.account["token"])
        self.outbox: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    def new_report(self) -> dict[str, Any]:
        lon, lat = random.choice(self.account["points"])
        captured = datetime.now(UTC) - timedelta(seconds=random.uniform(5, 600))
        return {
            "report": {
                "client_uuid": str(uuid.uuid4()),
                "category": random.choice(FIXTURE["categories"]),
                "lon": lon,
                "lat": lat,
                "accuracy_m": round(random.uniform(3, 15), 1),
                "captured_at": captured.isoformat(),
                "description": f"load bench: {self.account['username']}",
            },
            "photo": random.random() < FIXTURE["photo_share"],
        }

    def send(self, entry: dict[str, Any], kind: str) -> bool:
        report = entry["report"]
        client_uuid = report["client_uuid"]
        LEDGER["unacked"].add(client_uuid)
        headers = dict(self.headers)
        if entry["photo"]:
            boundary = uuid.uuid4().hex
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="report"\r\n'
                    f"Content-Type: application/json\r\n\r\n{json.dumps(report)}\r\n"
                    f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; '
                    f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
                ).encode()
                + PHOTO
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            kind += "+photo"
        else:
            body = json.dumps(report).encode()
            headers["Content-Type"] = "application/json"
        with self.client.post(
            "/api/v1/incidents", data=body, headers=headers, name=kind, catch_response=True
        ) as response:
            status = response.status_code
            if status in (200, 201):
                response.success()
                seen = LEDGER["acked"].setdefault(
                    client_uuid, {"created": 0, "replayed": 0, "photos": int(entry["photo"])}
                )
                seen["created" if status == 201 else "replayed"] += 1
                return True
            LEDGER["refused"][str(status)] = LEDGER["refused"].get(str(status), 0) + 1
            response.failure(f"{status}: {(response.text or '')[:200]}")
            return False

    @task
    def sync(self) -> None:
        self.outbox.extend(self.new_report() for _ in range(random.choice((1, 1, 2, 3))))
        while self.outbox:
            entry = self.outbox[0]
            if not self.send(entry, "tablet sync"):
                break  # the rest waits for the next sync, in order
            self.sent.append(self.outbox.pop(0))
        if self.sent and random.random() < FIXTURE["replay_share"]:
            again = random.choice(self.sent)
            if random.random() < FIXTURE["double_share"] / FIXTURE["replay_share"]:
                gevent.joinall([gevent.spawn(self.send, again, "tablet replay") for _ in range(2)])
            else:
                self.send(again, "tablet replay")


class MapViewer(FastHttpUser):
    """The tablet or board map: a viewport of grids, enterprises and outlets (GeoJSON pages
    of up to 1000 features, the three layers at once), then a pan or zoom elsewhere."""

    weight = 2
    wait_time = think()
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    next_account = staticmethod(_round_robin(FIXTURE["viewers"]))

    def on_start(self) -> None:
        self.account = self.next_account()
        self.headers = _headers(self.account["token"])

    def layer(self, name: str, bbox: str) -> None:
        self.client.get(
            f"/api/v1/{name}?bbox={bbox}&limit=1000", headers=self.headers, name=f"viewport {name}"
        )

    @task
    def look(self) -> None:
        zoom = random.uniform(*self.account["zooms"])
        bbox = ",".join(f"{v:.5f}" for v in _viewport(self.account["extent"], zoom, 1280, 800))
        gevent.joinall(
            [gevent.spawn(self.layer, n, bbox) for n in ("grids", "enterprises", "outlets")]
        )


class TileViewer(FastHttpUser):
    """A large jurisdiction's map drawn from vector tiles: a screen of tiles of four layers at
    first, then pans that load one new row or column, and now and then a zoom (a new screen)."""

    weight = 2
    wait_time = think()
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    next_account = staticmethod(_round_robin(FIXTURE["tile_viewers"]))
    layers = ("grids", "enterprises", "outlets", "incidents")

    def on_start(self) -> None:
        self.account = self.next_account()
        self.headers = _headers(self.account["token"])
        self.pool = Pool(BROWSER_PARALLEL)
        self.screen: tuple[int, int, int, int, int] | None = None

    def fetch(self, tiles: list[tuple[int, int, int]]) -> None:
        for layer in self.layers:
            for z, x, y in tiles:
                self.pool.spawn(
                    self.client.get,
                    f"/api/v1/tiles/{layer}/{z}/{x}/{y}.pbf",
                    headers=self.headers,
                    name=f"tile {layer}",
                )
        self.pool.join()

    @task
    def view(self) -> None:
        if self.screen is None or random.random() < 0.2:
            zoom = random.randint(*self.account["zooms"])
            west, south, east, north = _viewport(self.account["extent"], zoom, 1024, 768)
            x0, y0 = _tile(west, north, zoom)
            x1, y1 = _tile(east, south, zoom)
            self.screen = (zoom, x0, y0, x1, y1)
            tiles = [(zoom, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
        else:
            zoom, x0, y0, x1, y1 = self.screen
            dx, dy = random.choice(((1, 0), (-1, 0), (0, 1), (0, -1)))
            x0, x1, y0, y1 = x0 + dx, x1 + dx, y0 + dy, y1 + dy
            self.screen = (zoom, x0, y0, x1, y1)
            if dx:
                column = x1 if dx > 0 else x0
                tiles = [(zoom, column, y) for y in range(y0, y1 + 1)]
            else:
                row = y1 if dy > 0 else y0
                tiles = [(zoom, x, row) for x in range(x0, x1 + 1)]
        self.fetch(tiles)


class Dispatcher(FastHttpUser):
    """The dispatch board: its refresh (cases, queue and workload together), then now and
    then an assignment of a queued case to an inspector of its grid, with the version seen
    (``If-Match``); another dispatcher may have been first (412), which the board shows."""

    weight = 1
    wait_time = think(3)
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    next_account = staticmethod(_round_robin(FIXTURE["dispatchers"]))

    def on_start(self) -> None:
        self.account = self.next_account()
        self.headers = _headers(self.account["token"])
        self.queue: list[dict[str, Any]] = []

    def get_queue(self) -> None:
        with self.client.get(
            "/api/v1/dispatch/queue?limit=500", headers=self.headers, name="dispatch queue"
        ) as response:
            if response.status_code == 200:
                self.queue = response.json()["items"]

    @task
    def work(self) -> None:
        gevent.joinall(
            [
                gevent.spawn(self.get_queue),
                gevent.spawn(
                    self.client.get,
                    "/api/v1/board/cases?limit=1000",
                    headers=self.headers,
                    name="board cases",
                ),
                gevent.spawn(
                    self.client.get,
                    "/api/v1/dispatch/workload",
                    headers=self.headers,
                    name="dispatch workload",
                ),
            ]
        )
        if self.queue and random.random() < 0.5:
            self.assign(random.choice(self.queue[:20]))  # the top of the queue

    def assign(self, item: dict[str, Any]) -> None:
        people = FIXTURE["grid_inspectors"].get(item.get("grid_code") or "", [])
        current = (item.get("assignee") or {}).get("id")
        choices = [p for p in people if p != current] or people
        if not choices:
            return
        with self.client.post(
            f"/api/v1/dispatch/cases/{item['id']}/assign",
            data=json.dumps({"assignee": random.choice(choices), "note": "load bench"}),
            headers={
                **self.headers,
                "Content-Type": "application/json",
                "If-Match": f'"{item["version"]}"',
            },
            name="assign",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                response.success()
            elif response.status_code == 412:
                LEDGER["stale_assign"] += 1
                response.success()
            elif response.status_code == 409:
                LEDGER["final_assign"] += 1
                response.success()
            else:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")


class KpiReader(FastHttpUser):
    """The KPI dashboard: the year by month, as a whole and by one grouping, together."""

    weight = 1
    wait_time = think(10)
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    next_account = staticmethod(_round_robin(FIXTURE["kpi_readers"]))

    def on_start(self) -> None:
        self.account = self.next_account()
        self.headers = _headers(self.account["token"])

    @task
    def dashboard(self) -> None:
        query = f"period=month&start={FIXTURE['year_start']}&end={FIXTURE['today']}"
        # Mostly the dashboard's default grouping (the level below the reader's), at times
        # another one picked in the form.
        groupings = self.account["groupings"]
        by = groupings[0] if random.random() < 0.7 else random.choice(groupings[1:])
        gevent.joinall(
            [
                gevent.spawn(
                    self.client.get, f"/api/v1/kpis?{query}", headers=self.headers, name="kpis"
                ),
                gevent.spawn(
                    self.client.get,
                    f"/api/v1/kpis?{query}&by={by}",
                    headers=self.headers,
                    name="kpis by area",
                ),
            ]
        )


class Health(FastHttpUser):
    """The baseline: the cheapest route that still asks the database (``GET /health``)."""

    weight = 1
    wait_time = think()
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT

    @task
    def health(self) -> None:
        self.client.get("/health", name="health")


def _stop_after_max(environment: Any) -> None:
    while LEDGER["requests"] < MAX_REQUESTS:
        gevent.sleep(0.02)
    environment.runner.quit()


@events.init.add_listener
def _watch(environment: Any, **_: Any) -> None:
    if MAX_REQUESTS and environment.runner is not None:
        gevent.spawn(_stop_after_max, environment)
