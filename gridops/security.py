"""Security headers on every response, set in one place (``init_app``).

Content-Security-Policy
    Pages get a strict policy: everything the app serves comes from its own origin (the
    front-end libraries are in static/vendor/, no CDN, no basemap server), so scripts, styles,
    fonts, workers and fetches are ``'self'`` only, with no ``'unsafe-inline'`` and no
    ``'unsafe-eval'``. The one inline script is the planner's folium map (a few MB of
    generated Leaflet code and GeoJSON, made per run and per jurisdiction): the template emits
    it through ``inline_script``, which allows exactly that text by its SHA-256 in this
    response's policy. Serving it from a URL of its own instead would render the map twice per
    view, or need a cache shared by every worker process. ``<script type="application/json">``
    data blocks are never executed and need nothing. Styles need no ``'unsafe-inline'``:
    Leaflet, folium's templates and Chart.js set them through ``element.style`` (the CSSOM,
    which a policy does not govern), never as ``style`` attributes or ``<style>`` elements
    (tests/test_security_headers.py listens for violations on every page). Images may also
    be ``data:`` (Leaflet's and Chart.js's generated images) and ``blob:`` (the tablet's
    photo previews).
    The service worker's script gets the same policy (a worker follows its own response's
    policy); every other non-page answer (JSON, GeoJSON, CSV, tiles, photos) gets a policy
    that allows nothing, in case one is ever opened as a document.

Cache-Control
    ``no-store`` on every answer of the app except static files and the few deliberate private
    caches in ``PRIVATE_CACHES``: almost everything is personal or depends on who asks (cases,
    reporters, jurisdictions, the CSRF token in every page), and a shared computer or proxy
    must not keep it. The tablet's offline copies live in its service worker's Cache Storage,
    which ``no-store`` does not touch.

The rest: ``nosniff``, a same-origin referrer, no framing, and HSTS outside development and
testing (those run on plain http://127.0.0.1).

JSON request bodies
    Python's parser accepts what JSON does not (``NaN``, ``Infinity``, and ``1e999`` becomes
    infinity), makes integers of any size (an id beyond PostgreSQL's bigint fails the query),
    and raises RecursionError, not ValueError, on a deeply nested body. ``StrictJSONProvider``
    refuses all of these with a 422 naming the reason, before any view sees them.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from markupsafe import Markup

from gridops.errors import FieldError, InvalidInput

PAGE_POLICY = (
    ("default-src", "'self'"),
    ("script-src", "'self'"),
    ("style-src", "'self'"),
    ("img-src", "'self' data: blob:"),
    ("font-src", "'self'"),
    ("connect-src", "'self'"),
    ("worker-src", "'self'"),
    ("manifest-src", "'self'"),
    ("object-src", "'none'"),
    ("base-uri", "'self'"),
    ("frame-ancestors", "'none'"),
    ("form-action", "'self'"),
)
# For answers that are data, not documents: nothing may run or load if one is opened as a page.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

HSTS = "max-age=31536000; includeSubDomains"
REFERRER_POLICY = "same-origin"

# Endpoints whose own Cache-Control is kept (always ``private``: never a shared cache), why:
PRIVATE_CACHES = {
    # Vector tiles: a map pans back and forth over the same tiles; each depends on who asks
    # (Vary: Authorization, Cookie) and holds no reporter data; 5 minutes, with an ETag.
    "tiles.tile": "private",
    "tiles.incident_tile": "private",
    # The category catalogue: the same for everyone, read by every page and tablet; ETag.
    "catalogue.categories": "private",
    # Case photos (JPEG, up to 10 MB each) over a tablet's patchy network, for viewers with
    # full access; ``private`` keeps them out of shared caches.
    "cases.case_photo": "private",
    # The service worker: ``no-cache`` (revalidated on every check), as browsers expect.
    "tablet.service_worker": "no-cache",
}
SERVICE_WORKER_ENDPOINT = "tablet.service_worker"


def script_hash(source: str) -> str:
    """The CSP source expression that allows an inline script of exactly this text."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def inline_script(source: str) -> Markup:
    """``<script>source</script>``, allowed by its hash in this response's policy.

    For generated code only (folium's map); ``source`` must not be able to end the element."""
    if "</script" in source.lower():
        raise ValueError("an inline script must not contain '</script'")
    hashes: list[str] = g.setdefault("csp_script_hashes", [])
    hashes.append(script_hash(source))
    return Markup("<script>") + Markup(source) + Markup("</script>")


def page_policy(script_hashes: list[str] | tuple[str, ...] = ()) -> str:
    parts = []
    for directive, value in PAGE_POLICY:
        if directive == "script-src" and script_hashes:
            value = " ".join([value, *dict.fromkeys(script_hashes)])
        parts.append(f"{directive} {value}")
    return "; ".join(parts)


def _is_page(response: Response) -> bool:
    return response.mimetype in ("text/html", "application/xhtml+xml")


def set_headers(response: Response) -> Response:
    """The headers above, on one response (an ``after_request`` hook)."""
    endpoint = request.endpoint or ""
    headers = response.headers
    static = endpoint == "static"
    if _is_page(response) or endpoint == SERVICE_WORKER_ENDPOINT:
        headers["Content-Security-Policy"] = page_policy(g.get("csp_script_hashes", ()))
    elif not static:
        headers["Content-Security-Policy"] = DATA_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = REFERRER_POLICY
    headers["X-Frame-Options"] = "DENY"  # frame-ancestors for browsers that predate it
    if current_app.config["ENV"] not in ("development", "testing"):
        headers["Strict-Transport-Security"] = HSTS
    if not static:
        kept = PRIVATE_CACHES.get(endpoint)
        current = headers.get("Cache-Control", "")
        if kept is None or kept not in current:
            headers["Cache-Control"] = "no-store"
    return response


# -- JSON request bodies -------------------------------------------------------------------

BIGINT = 2**63 - 1  # PostgreSQL's bigint, the widest integer column


def _refuse(reason: str) -> InvalidInput:
    # Not a ValueError: request.get_json(silent=True) would turn it into "no JSON at all".
    return InvalidInput(f"the JSON body is not acceptable: {reason}", [FieldError("body", reason)])


def _short(raw: str) -> str:
    return raw if len(raw) <= 24 else raw[:20] + "…"


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise _refuse(f"the number {_short(raw)} is too large")
    return value


def _bounded_int(raw: str) -> int:
    value = int(raw)  # Python itself refuses more than 4,300 digits (a ValueError)
    if not -BIGINT - 1 <= value <= BIGINT:
        raise _refuse(f"the integer {_short(raw)} does not fit in 64 bits")
    return value


def _constant(name: str) -> float:
    raise _refuse(f"{name} is not a JSON number")


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing non-finite numbers, integers beyond 64 bits and deep nesting."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_float", _finite)
        kwargs.setdefault("parse_int", _bounded_int)
        kwargs.setdefault("parse_constant", _constant)
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise _refuse("nested too deeply") from None


def init_app(app: Flask) -> None:
    strict = StrictJSONProvider(app)
    for setting in ("ensure_ascii", "sort_keys", "compact", "mimetype"):
        setattr(strict, setting, getattr(app.json, setting))
    app.json = strict
    app.after_request(set_headers)
    app.jinja_env.globals["inline_script"] = inline_script
