"""HTML pages."""

from __future__ import annotations

from flask import Blueprint, g, render_template
from flask.typing import ResponseReturnValue

from gridops import ogc

bp = Blueprint("web", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    # GIS clients (QGIS) ask the same address for the OGC API landing page as JSON.
    if ogc.wants_json():
        return ogc.landing_page()
    return render_template("index.html", lang=g.lang)
