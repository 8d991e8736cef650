"""Interface language: Simplified Chinese first, English on request.

The language comes from ``?lang=`` (remembered in a cookie), else the cookie, else the
configured default; the browser's Accept-Language is not used because shared tablets in
Foshan are often set to English while their users read Chinese.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request

LANGUAGES = ("zh", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "app.title": {"zh": "网格通 gridops", "en": "gridops"},
    "app.tagline": {
        "zh": "基层网格化管理平台：网格、事件、派遣与热点分析",
        "en": "Grid management for local government: grids, incidents, dispatch and hotspots",
    },
    "nav.health": {"zh": "系统状态", "en": "System status"},
    "nav.language": {"zh": "English", "en": "中文"},
    "map.caption": {"zh": "佛山市网格地图", "en": "Foshan grid map"},
    "login.title": {"zh": "登录", "en": "Sign in"},
    "login.username": {"zh": "用户名", "en": "Username"},
    "login.password": {"zh": "密码", "en": "Password"},
    "login.submit": {"zh": "登录", "en": "Sign in"},
    "login.failed": {
        "zh": "用户名或密码错误，或账号已停用。",
        "en": "Wrong username or password, or the account is disabled.",
    },
    "nav.logout": {"zh": "退出", "en": "Sign out"},
    "nav.main": {"zh": "主导航", "en": "Main navigation"},
    "nav.tablet": {"zh": "巡查上报", "en": "Patrol & report"},
    "nav.board": {"zh": "派遣调度", "en": "Dispatch board"},
    "nav.hotspots": {"zh": "热点分析", "en": "Hotspot map"},
    "nav.kpis": {"zh": "考核指标", "en": "KPI dashboard"},
}


def register_messages(messages: dict[str, dict[str, str]]) -> None:
    """Add a page's messages (``{"key": {"zh": …, "en": …}}``); keys must be new."""
    clash = MESSAGES.keys() & messages.keys()
    if clash:
        raise ValueError(f"message keys defined twice: {sorted(clash)}")
    missing = [k for k, v in messages.items() if set(v) != set(LANGUAGES)]
    if missing:
        raise ValueError(f"messages without both languages: {missing}")
    MESSAGES.update(messages)


def messages_for(prefix: str) -> dict[str, str]:
    """The messages under ``prefix`` in the current language, for a page's script (rendered
    into a ``<script type="application/json">`` block, which no CSP blocks)."""
    lang = g.get("lang", "zh")
    return {k: v[lang] for k, v in MESSAGES.items() if k.startswith(prefix)}


def pick_language() -> str:
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        return asked
    remembered = request.cookies.get("lang")
    if remembered in LANGUAGES:
        return remembered
    return str(current_app.config["DEFAULT_LANGUAGE"])


def translate(key: str) -> str:
    return MESSAGES[key][g.get("lang", "zh")]


def init_app(app: Flask) -> None:
    @app.before_request
    def _set_language() -> None:
        g.lang = pick_language()

    @app.after_request
    def _remember_language(response: Response) -> Response:
        if request.args.get("lang") in LANGUAGES:
            response.set_cookie("lang", request.args["lang"], max_age=365 * 86400, samesite="Lax")
        return response

    app.jinja_env.globals["_"] = translate
    app.jinja_env.globals["messages_for"] = messages_for
