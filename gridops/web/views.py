"""HTML pages."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from gridops import ogc
from gridops.auth.web import current_actor, public

bp = Blueprint("web", __name__)


@bp.get("/")
@public
def index() -> ResponseReturnValue:
    # GIS clients (QGIS) ask the same address for the OGC API landing page as JSON.
    if ogc.wants_json():
        return ogc.landing_page()
    if current_actor() is None:
        return redirect(url_for("auth.login"))
    return render_template("index.html", lang=g.lang)
