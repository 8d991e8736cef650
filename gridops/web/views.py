"""HTML pages."""

from __future__ import annotations

from flask import Blueprint, g, render_template
from flask.typing import ResponseReturnValue

bp = Blueprint("web", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    return render_template("index.html", lang=g.lang)
