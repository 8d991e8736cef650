"""The OpenAPI 3.1 description of the JSON API: kept as YAML next to this module (reviewed like
code, checked against the app's routes and fuzzed with schemathesis by tests/test_openapi.py)
and served as JSON at ``GET /api/v1/openapi.json``."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from gridops.auth.web import public

SPEC_PATH = Path(__file__).with_name("openapi.yaml")

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")


@cache
def _loaded() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    if not isinstance(spec, dict) or not str(spec.get("openapi", "")).startswith("3."):
        raise RuntimeError(f"{SPEC_PATH} is not an OpenAPI 3 document")
    return spec


def load_spec() -> dict[str, Any]:
    """The OpenAPI document as a dict (a fresh copy: callers may change it)."""
    return copy.deepcopy(_loaded())


@bp.get("/openapi.json")
@public
def openapi_json() -> ResponseReturnValue:
    return jsonify(_loaded())
