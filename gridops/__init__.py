"""gridops: geospatial grid management for local governments."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

from gridops.config import PROJECT_ROOT, load_config

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory. ``config`` overrides the ``GRIDOPS_*`` environment."""
    settings = load_config(config)
    app = Flask(
        __name__,
        static_folder=str(PROJECT_ROOT / "static"),
        template_folder=str(PROJECT_ROOT / "templates"),
    )
    app.config.update(settings)
    if settings["TRUSTED_PROXIES"]:
        # Behind a proxy, rate limits and audit rows need the client's address, not the proxy's.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = int(settings["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.config["TESTING"] = settings["ENV"] == "testing" or bool(settings.get("TESTING"))
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    logging.basicConfig(level=settings["LOG_LEVEL"])
    # Alembic announces each of its plugins at INFO whenever a script directory is read.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    from gridops import db, errors, security
    from gridops.api import reject_unstorable_text
    from gridops.auth import web as auth_web
    from gridops.auth.views import bp as auth_bp
    from gridops.cli import register_commands
    from gridops.dispatch.views import bp as dispatch_bp
    from gridops.grids.views import bp as grids_bp
    from gridops.health import bp as health_bp
    from gridops.hotspots.views import bp as hotspots_bp
    from gridops.incidents.admin_views import bp as catalogue_bp
    from gridops.incidents.listing import bp as case_list_bp
    from gridops.incidents.views import bp as cases_bp
    from gridops.inspections.views import bp as inspections_bp
    from gridops.kpi.views import bp as kpi_bp
    from gridops.notifications.views import bp as inbox_bp
    from gridops.ogc import bp as ogc_bp
    from gridops.open311.views import bp as open311_bp
    from gridops.openapi import bp as openapi_bp
    from gridops.overlays.views import bp as overlays_bp
    from gridops.patrol.views import bp as patrol_bp
    from gridops.tiles import bp as tiles_bp
    from gridops.web import i18n
    from gridops.web import views as web_views
    from gridops.web.board import bp as board_bp
    from gridops.web.planner import bp as planner_bp
    from gridops.web.tablet import bp as tablet_bp
    from gridops.web.views import bp as web_bp

    # First of the before-request hooks: every later one (and every error) may log it.
    @app.before_request
    def _request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 64 else uuid.uuid4().hex

    db.init_app(app)
    errors.register_error_handlers(app)
    security.init_app(app)
    i18n.init_app(app)
    web_views.init_app(app)
    app.before_request(reject_unstorable_text)  # before authorize(), whose CSRF check reads forms
    auth_web.init_app(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(web_bp)
    app.register_blueprint(tablet_bp)
    app.register_blueprint(board_bp)
    app.register_blueprint(grids_bp)
    app.register_blueprint(overlays_bp)
    app.register_blueprint(ogc_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(cases_bp)
    app.register_blueprint(kpi_bp)
    app.register_blueprint(catalogue_bp)
    app.register_blueprint(case_list_bp)
    app.register_blueprint(open311_bp)
    app.register_blueprint(dispatch_bp)
    app.register_blueprint(inbox_bp)
    app.register_blueprint(inspections_bp)
    app.register_blueprint(patrol_bp)
    app.register_blueprint(hotspots_bp)
    app.register_blueprint(tiles_bp)
    app.register_blueprint(planner_bp)
    app.register_blueprint(openapi_bp)
    auth_web.check_declarations(app)
    register_commands(app.cli)

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    return app
