"""HTML pages: the landing page and the navigation between the role pages."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, current_app, g, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from gridops import ogc
from gridops.auth.actor import MANAGER_ROLES, Actor
from gridops.auth.web import current_actor, public

bp = Blueprint("web", __name__)


@dataclass(frozen=True)
class NavLink:
    endpoint: str
    label: str  # message key
    roles: frozenset[str]  # who uses the page day to day (admins see every page)


# In the order a role's landing page is chosen: an inspector who is also a manager starts at
# the board, a manager who also plans starts at the board too.
NAV_LINKS = (
    NavLink("board.page", "nav.board", frozenset(MANAGER_ROLES)),
    NavLink("tablet.page", "nav.tablet", frozenset({"inspector", *MANAGER_ROLES})),
    NavLink("planner.hotspot_map", "nav.hotspots", frozenset({"planner", *MANAGER_ROLES})),
    NavLink("planner.kpi_dashboard", "nav.kpis", frozenset({"planner", *MANAGER_ROLES})),
)


def nav_links(actor: Actor | None) -> list[NavLink]:
    """The role pages this actor uses, among those the app serves."""
    if actor is None:
        return []
    served = current_app.view_functions
    return [
        link
        for link in NAV_LINKS
        if link.endpoint in served and (actor.is_admin or link.roles & actor.roles)
    ]


def landing_endpoint(actor: Actor) -> str | None:
    """Where a signed-in user starts: the first role page they use (None: the overview)."""
    if actor.is_admin:
        return None
    links = nav_links(actor)
    return links[0].endpoint if links else None


@bp.get("/")
@public
def index() -> ResponseReturnValue:
    # GIS clients (QGIS) ask the same address for the OGC API landing page as JSON.
    if ogc.wants_json():
        return ogc.landing_page()
    actor = current_actor()
    if actor is None:
        return redirect(url_for("auth.login"))
    landing = landing_endpoint(actor)
    if landing is not None:
        return redirect(url_for(landing))
    return render_template("index.html", lang=g.lang)


def init_app(app: Flask) -> None:
    @app.context_processor
    def _navigation() -> dict[str, object]:
        return {"nav_links": nav_links(current_actor())}
