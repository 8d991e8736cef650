"""``gridops hotspots run|list|show``: hotspot runs from the command line, acting everywhere
(as an administrator and the nightly job do). Bad parameters exit 1 naming each one; nothing
is written then."""

from __future__ import annotations

import json

import click

from gridops.commands import fail, open_session
from gridops.errors import GridopsError


@click.group("hotspots")
def hotspots_cli() -> None:
    """Hot spot analysis on H3 cells: Gi* and emerging hot spots, stored as runs."""


@hotspots_cli.command("run")
@click.option(
    "--kind", type=click.Choice(["gistar", "emerging"]), default="gistar", show_default=True
)
@click.option("--resolution", default="9", show_default=True, help="H3 resolution, 7..10.")
@click.option("--k", default=None, help="Neighbourhood rings, 1..10 (default: from the data).")
@click.option("--start", required=True, help="First day (YYYY-MM-DD, local) or ISO time.")
@click.option("--end", required=True, help="Day after the last (exclusive) or ISO time.")
@click.option("--step", help="Emerging runs: day, week or month (default month).")
@click.option("--category", help="A minor (E0502) or major (E05) category code.")
@click.option("--source", help="inspector, hotline, public or referral.")
@click.option("--area", help="An area code (default: the only top-level area).")
def hotspots_run(
    kind: str,
    resolution: str,
    k: str | None,
    start: str,
    end: str,
    step: str | None,
    category: str | None,
    source: str | None,
    area: str | None,
) -> None:
    """Analyse the incidents of an area and period and store the run."""
    from gridops.hotspots.service import get_run, run_hotspots

    session = open_session()
    try:
        run_id = run_hotspots(
            session,
            kind=kind,
            resolution=resolution,  # type: ignore[arg-type]  # validated as text too
            k=k,  # type: ignore[arg-type]
            start=start,
            end=end,
            step=step,
            category=category,
            source=source,
            area=area,
        )
        session.commit()
        run = get_run(session, run_id)
    except GridopsError as exc:
        session.rollback()
        raise fail(exc) from exc
    finally:
        session.close()
    summary = run["summary"]
    click.echo(
        f"run {run_id}: {run['kind']} at resolution {run['resolution']} (k={run['k']}), "
        f"{run['n_points']} incidents in {run['n_cells']} cells of {run['area']['code']}: "
        f"{summary['hot_cells']} hot, {summary['cold_cells']} cold; {run['seconds']} s"
    )


@hotspots_cli.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
def hotspots_list(limit: int) -> None:
    """The stored runs, newest first."""
    from gridops.hotspots.service import list_runs

    session = open_session()
    try:
        runs = list_runs(session, limit=limit)
    finally:
        session.close()
    for run in runs:
        filters = ",".join(f"{k}={v}" for k, v in sorted(run["filters"].items())) or "-"
        click.echo(
            f"{run['id']}\t{run['kind']}\tres {run['resolution']}\tk {run['k']}\t"
            f"{run['start'][:10]}..{run['end'][:10]}\t{run['step'] or '-'}\t"
            f"{run['area']['code']}\t{filters}\t{run['n_points']} pts\t{run['n_cells']} cells\t"
            f"{run['created_at'][:19]}"
        )
    click.echo(f"{len(runs)} run(s)")


@hotspots_cli.command("show")
@click.argument("run_id", type=int)
@click.option("--min-bin", default=1, show_default=True, type=click.IntRange(0, 3))
@click.option("--top", default=20, show_default=True, type=click.IntRange(0))
@click.option("--geojson", is_flag=True, help="Print the cells as a GeoJSON FeatureCollection.")
def hotspots_show(run_id: int, min_bin: int, top: int, geojson: bool) -> None:
    """A run's parameters and summary, and its strongest cells (|bin| >= --min-bin)."""
    from gridops.hotspots.service import cells_geojson, get_run, run_cells

    session = open_session()
    try:
        run = get_run(session, run_id)
        cells = run_cells(session, run_id, min_bin=min_bin)
    except GridopsError as exc:
        raise fail(exc) from exc
    finally:
        session.close()
    if geojson:
        click.echo(json.dumps(cells_geojson(cells, run), ensure_ascii=False))
        return
    click.echo(json.dumps(run, ensure_ascii=False, indent=2))
    strongest = cells.reindex(cells["z"].abs().sort_values(ascending=False).index).head(top)
    for row in cells_geojson(strongest, run)["features"]:
        p = row["properties"]
        extra = f"\t{p['category']}" if "category" in p else ""
        z = "-" if p["z"] is None else f"{p['z']:.2f}"
        click.echo(f"{p['cell']}\tcount {p['count']}\tz {z}\tbin {p['bin']}{extra}")


COMMANDS = (hotspots_cli,)
