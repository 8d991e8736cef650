"""The inspector's tablet page: their grids on a map, logging incidents, offline first.

The page is a Jinja template plus static scripts (``static/js/outbox.js``: the IndexedDB
outbox and its sync loop; ``static/js/tablet.js``: the map and the report form). Its data
comes from the JSON API it already has (grids, enterprises, outlets, cases, inspection tasks,
categories); reports go to ``POST /api/v1/incidents``, whose client UUID makes replays safe.

``/sw.js`` is the service worker (``static/js/sw.js``), served from the site root so that its
scope can cover ``/tablet`` and the API. It is sent with a precache manifest in front of it:
each static file the page needs with a hash of its bytes, so that any change to one of them
changes the worker's bytes, which is what makes browsers install the new worker.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, current_app, g, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Scope
from gridops.auth.web import current_actor, public, requires
from gridops.db import get_session
from gridops.incidents.workcal import TZ
from gridops.web.i18n import register_messages

bp = Blueprint("tablet", __name__)

# Cache names shared by sw.js (runtime routes) and tablet.js (warming, clearing at sign-out).
PAGE_CACHE = "gridops-tablet-pages"
API_CACHE = "gridops-tablet-api"

# What the page loads from static/: precached by the service worker, so that the page works
# offline after one visit. Leaflet's images are referenced from its CSS.
PRECACHE_FILES = (
    "favicon.svg",
    "css/gridops.css",
    "css/tablet.css",
    "js/outbox.js",
    "js/tablet.js",
    "vendor/leaflet/leaflet.css",
    "vendor/leaflet/leaflet.js",
    "vendor/leaflet/images/layers.png",
    "vendor/leaflet/images/layers-2x.png",
    "vendor/leaflet/images/marker-icon.png",
    "vendor/leaflet/images/marker-icon-2x.png",
    "vendor/leaflet/images/marker-shadow.png",
    "vendor/leaflet.markercluster/MarkerCluster.css",
    "vendor/leaflet.markercluster/leaflet.markercluster.js",
    "vendor/leaflet.vectorgrid/Leaflet.VectorGrid.bundled.min.js",
    "vendor/idb/idb.umd.js",
)

MESSAGES: dict[str, dict[str, str]] = {
    "tablet.title": {"zh": "巡查上报", "en": "Patrol & report"},
    "tablet.map": {"zh": "我的网格地图", "en": "Map of my grids"},
    "tablet.panel": {"zh": "上报与待办", "en": "Reports and to-dos"},
    "tablet.status": {"zh": "同步状态", "en": "Sync status"},
    "tablet.online": {"zh": "在线", "en": "Online"},
    "tablet.offline": {"zh": "离线", "en": "Offline"},
    "tablet.outbox_label": {"zh": "待发送", "en": "To send"},
    "tablet.last_sync_label": {"zh": "上次同步", "en": "Last sync"},
    "tablet.never": {"zh": "尚未同步", "en": "never"},
    "tablet.sync_now": {"zh": "立即同步", "en": "Sync now"},
    "tablet.syncing": {"zh": "正在发送…", "en": "Sending…"},
    "tablet.sync_retry": {
        "zh": "暂时无法发送，稍后自动重试",
        "en": "Cannot send right now; will retry automatically",
    },
    "tablet.session_ended": {
        "zh": "登录已失效，待发送的上报已保留。请重新登录后继续同步。",
        "en": "Your session has ended; unsent reports are kept. Sign in again to send them.",
    },
    "tablet.sign_in_again": {"zh": "重新登录", "en": "Sign in again"},
    "tablet.log": {"zh": "上报事件", "en": "Log an incident"},
    "tablet.tab_report": {"zh": "上报", "en": "Report"},
    "tablet.tab_todo": {"zh": "任务与案件", "en": "Tasks & cases"},
    "tablet.tab_outbox": {"zh": "待发送", "en": "Outbox"},
    "tablet.step_place": {"zh": "1 位置", "en": "1 Place"},
    "tablet.use_gps": {"zh": "GPS 定位", "en": "Use GPS"},
    "tablet.tap_map": {
        "zh": "或直接点击地图选点",
        "en": "or tap the map",
    },
    "tablet.no_place": {"zh": "尚未选择位置", "en": "No place chosen yet"},
    "tablet.locating": {"zh": "正在定位…", "en": "Locating…"},
    "tablet.gps_failed": {
        "zh": "无法获取 GPS 位置，请点击地图选点",
        "en": "No GPS position; tap the map instead",
    },
    "tablet.accuracy": {"zh": "精度 ±{m} 米", "en": "accuracy ±{m} m"},
    "tablet.placed_by_tap": {"zh": "地图选点", "en": "tapped on the map"},
    "tablet.in_grid": {"zh": "网格 {code}", "en": "grid {code}"},
    "tablet.outside_grids": {
        "zh": "该位置不在您负责的网格内，服务器可能拒收",
        "en": "This place is outside your grids; the server may refuse it",
    },
    "tablet.step_category": {"zh": "2 类别", "en": "2 Category"},
    "tablet.category_search": {
        "zh": "搜索类别（名称或编码）",
        "en": "Search categories (name or code)",
    },
    "tablet.category_chosen": {"zh": "已选：{name}", "en": "Chosen: {name}"},
    "tablet.no_category": {"zh": "尚未选择类别", "en": "No category chosen yet"},
    "tablet.no_match": {"zh": "没有匹配的类别", "en": "No category matches"},
    "tablet.categories_unavailable": {
        "zh": "类别列表不可用（离线且未缓存）",
        "en": "Category list unavailable (offline, not cached)",
    },
    "tablet.step_photos": {"zh": "3 照片", "en": "3 Photos"},
    "tablet.take_photos": {"zh": "拍照 / 选择照片", "en": "Take or choose photos"},
    "tablet.photo_count": {"zh": "{n} 张照片", "en": "{n} photo(s)"},
    "tablet.too_many_photos": {
        "zh": "最多 {n} 张照片",
        "en": "At most {n} photos",
    },
    "tablet.remove_photo": {"zh": "移除照片", "en": "Remove photo"},
    "tablet.step_note": {"zh": "4 说明", "en": "4 Note"},
    "tablet.note_placeholder": {"zh": "简要描述现场情况", "en": "Describe what you see"},
    "tablet.send": {"zh": "保存并发送", "en": "Save and send"},
    "tablet.cancel": {"zh": "清空", "en": "Clear"},
    "tablet.need_place": {"zh": "请先选择位置", "en": "Choose the place first"},
    "tablet.need_category": {"zh": "请选择类别", "en": "Choose a category"},
    "tablet.saved": {
        "zh": "已保存到待发送（{n} 条），联网后自动发送",
        "en": "Saved to the outbox ({n}); it is sent when online",
    },
    "tablet.sent": {"zh": "上报已送达服务器", "en": "Report received by the server"},
    "tablet.refused": {
        "zh": "服务器拒收了上报，请在“待发送”中查看原因",
        "en": "The server refused a report; see why in the outbox",
    },
    "tablet.save_failed": {
        "zh": "无法保存到本机：{e}",
        "en": "Could not save on this device: {e}",
    },
    "tablet.tasks": {"zh": "今日巡查任务", "en": "Today's inspection tasks"},
    "tablet.no_tasks": {"zh": "今日没有巡查任务", "en": "No inspection tasks today"},
    "tablet.my_cases": {"zh": "待我处理的案件", "en": "Cases waiting on me"},
    "tablet.open_cases": {"zh": "网格内未结案件", "en": "Open cases in my grids"},
    "tablet.no_cases": {"zh": "没有未结案件", "en": "No open cases"},
    "tablet.data_unavailable": {
        "zh": "部分数据暂不可用（离线且未缓存）",
        "en": "Some data is unavailable (offline, not cached)",
    },
    "tablet.outbox_empty": {"zh": "没有待发送的上报", "en": "Nothing waiting to be sent"},
    "tablet.state_pending": {"zh": "等待发送", "en": "Waiting to send"},
    "tablet.state_attention": {"zh": "需要处理", "en": "Needs attention"},
    "tablet.state_other_user": {
        "zh": "属于 {user}，需其登录后发送",
        "en": "Belongs to {user}; sent when they sign in",
    },
    "tablet.retry": {"zh": "重新发送", "en": "Send again"},
    "tablet.discard": {"zh": "删除", "en": "Discard"},
    "tablet.discard_confirm": {
        "zh": "删除这条未发送的上报？删除后无法恢复。",
        "en": "Discard this unsent report? It cannot be recovered.",
    },
    "tablet.attention_count": {"zh": "{n} 条需处理", "en": "{n} need attention"},
    "tablet.logout_confirm": {
        "zh": "还有 {n} 条上报未发送。退出后它们仍保存在本机，重新登录后才会发送。确定退出？",
        "en": "{n} report(s) are not sent yet. They stay on this device and are sent after "
        "you sign in again. Sign out anyway?",
    },
    "tablet.layer_grids": {"zh": "我的网格", "en": "My grids"},
    "tablet.layer_enterprises": {"zh": "企业", "en": "Enterprises"},
    "tablet.layer_outlets": {"zh": "服务网点", "en": "Service outlets"},
    "tablet.layer_cases": {"zh": "未结案件", "en": "Open cases"},
    "tablet.layer_tasks": {"zh": "今日任务", "en": "Today's tasks"},
    "tablet.layer_report": {"zh": "上报位置", "en": "Report place"},
    "tablet.f_address": {"zh": "地址", "en": "Address"},
    "tablet.f_industry": {"zh": "行业", "en": "Industry"},
    "tablet.f_risk": {"zh": "风险等级", "en": "Risk level"},
    "tablet.f_uscc": {"zh": "统一社会信用代码", "en": "Credit code"},
    "tablet.f_type": {"zh": "类型", "en": "Type"},
    "tablet.f_hours": {"zh": "开放时间", "en": "Opening hours"},
    "tablet.f_phone": {"zh": "电话", "en": "Phone"},
    "tablet.f_status": {"zh": "状态", "en": "Status"},
    "tablet.f_grid": {"zh": "网格", "en": "Grid"},
    "tablet.f_reported": {"zh": "上报时间", "en": "Reported"},
    "tablet.f_deadline": {"zh": "处置时限", "en": "Deadline"},
    "tablet.f_due": {"zh": "应检日期", "en": "Due"},
    "tablet.f_code": {"zh": "编码", "en": "Code"},
    "tablet.overdue": {"zh": "已超时", "en": "Overdue"},
    "tablet.ot_police_station": {"zh": "派出所", "en": "Police station"},
    "tablet.ot_clinic": {"zh": "社区卫生服务站", "en": "Clinic"},
    "tablet.ot_community_service_station": {
        "zh": "社区服务站",
        "en": "Community service station",
    },
    "tablet.ot_social_security": {"zh": "社保服务点", "en": "Social security office"},
    "tablet.ot_admin_service_centre": {"zh": "行政服务中心", "en": "Administrative service centre"},
    "tablet.ot_service_centre": {"zh": "服务中心", "en": "Service centre"},
    "tablet.task_open": {"zh": "待检查", "en": "To inspect"},
    "tablet.task_done": {"zh": "已完成", "en": "Done"},
    "tablet.kind_enterprise": {"zh": "企业", "en": "Enterprise"},
    "tablet.kind_outlet": {"zh": "服务网点", "en": "Outlet"},
    "tablet.st_reported": {"zh": "已上报", "en": "Reported"},
    "tablet.st_verified": {"zh": "已核实", "en": "Verified"},
    "tablet.st_filed": {"zh": "已立案", "en": "Filed"},
    "tablet.st_dispatched": {"zh": "已派遣", "en": "Dispatched"},
    "tablet.st_in_handling": {"zh": "处置中", "en": "In handling"},
    "tablet.st_extension_requested": {"zh": "延期申请", "en": "Extension requested"},
    "tablet.st_handled": {"zh": "已处置", "en": "Handled"},
    "tablet.st_checked": {"zh": "核查通过", "en": "Checked"},
    "tablet.st_closed": {"zh": "已结案", "en": "Closed"},
    "tablet.st_returned": {"zh": "已回退", "en": "Returned"},
    "tablet.st_parked": {"zh": "挂账", "en": "Parked"},
    "tablet.st_void": {"zh": "作废", "en": "Void"},
    "tablet.p_outside-jurisdiction": {
        "zh": "位置不在您负责的网格内",
        "en": "The place is outside your jurisdiction",
    },
    "tablet.p_invalid-input": {"zh": "上报内容有误", "en": "The report is not valid"},
    "tablet.p_conflict": {
        "zh": "该上报编号已被另一条上报使用",
        "en": "This report's id was already used for another report",
    },
    "tablet.p_forbidden": {"zh": "您的账号无权上报", "en": "Your account may not report"},
    "tablet.p_not-found": {"zh": "服务器找不到该地址", "en": "The server has no such address"},
    "tablet.p_other": {"zh": "服务器拒收（{status}）", "en": "Refused by the server ({status})"},
    "tablet.sent_at": {"zh": "记录于 {t}", "en": "captured {t}"},
}
register_messages(MESSAGES)


@lru_cache(maxsize=256)
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    """A short hash of a file's bytes; keyed by its mtime and size, so an edit is seen."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def precache_manifest() -> list[dict[str, str]]:
    """Workbox's precache entries: each static file of the page with a revision of its bytes."""
    static = Path(current_app.static_folder or "static")
    entries = []
    for name in PRECACHE_FILES:
        path = static / name
        stat = path.stat()
        entries.append(
            {
                "url": url_for("static", filename=name),
                "revision": _file_digest(path, stat.st_mtime_ns, stat.st_size),
            }
        )
    return entries


def scope_extent(session: Session, scope: Scope) -> list[float] | None:
    """``[minLon, minLat, maxLon, maxLat]`` around the areas and grids of a scope, rounded
    outwards (None: no limit, or nothing in scope).

    The page asks for enterprises and outlets within it: the same answer as without a bbox
    (a scope's points lie in its areas and grids), but the spatial index then picks the few
    candidates instead of testing every point of the city against the scope, which made the
    overlays the slowest part of the page's first load.
    """
    if scope.everything:
        return None
    row = session.execute(
        text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
            " SELECT ST_Extent(u.geom) AS e FROM ("
            "  SELECT geom FROM admin_area WHERE code = ANY(:scope_all_areas)"
            "  UNION ALL SELECT geom FROM unit_grid"
            "  WHERE valid_to IS NULL AND code = ANY(:scope_full_grids)) AS u) AS s"
        ),
        scope.params(),
    ).one()
    if row[0] is None:
        return None
    step = 1e-5  # about a metre: points on the edge stay inside
    return [
        round(math.floor(row[0] / step) * step, 5),
        round(math.floor(row[1] / step) * step, 5),
        round(math.ceil(row[2] / step) * step, 5),
        round(math.ceil(row[3] / step) * step, 5),
    ]


def data_urls(extent: list[float] | None) -> dict[str, str]:
    """The API reads of the page (fixed URLs: the service worker caches them by URL)."""
    near = {"bbox": ",".join(f"{v:.5f}" for v in extent)} if extent else {}
    return {
        "grids": url_for("grids.grids", limit=1000),
        "enterprises": url_for("overlays.enterprises", limit=1000, **near),
        "outlets": url_for("overlays.outlets", limit=1000, **near),
        "cases": url_for("case_list.cases", status="open", limit=1000),
        "my_cases": url_for("case_list.cases", status="open", assigned="me", limit=1000),
        "tasks": url_for("inspections.tasks"),
        "categories": url_for("catalogue.categories"),
    }


@bp.get("/tablet")
@requires("write:incidents")
def page() -> ResponseReturnValue:
    actor = current_actor()
    assert actor is not None  # authorize() redirected strangers to /login
    extent = scope_extent(get_session(), actor.scope())
    settings = {
        "user": {
            "id": actor.user_id,
            "username": actor.username,
            "display_name": actor.display_name,
        },
        "lang": g.lang,
        "timezone": str(TZ),
        "extent": extent,
        "api": data_urls(extent),
        "photo_max_count": int(current_app.config["PHOTO_MAX_COUNT"]),
        "photo_max_bytes": int(current_app.config["PHOTO_MAX_BYTES"]),
        "service_worker": url_for("tablet.service_worker"),
        "login": url_for("auth.login", next=url_for("tablet.page")),
        "caches": {"pages": PAGE_CACHE, "api": API_CACHE},
    }
    return render_template("tablet.html", lang=g.lang, settings=settings)


@bp.get("/sw.js")
@public
def service_worker() -> ResponseReturnValue:
    """The service worker, at the root so that its scope may be ``/``; never cached stale."""
    config = {
        "precache": precache_manifest(),
        "workbox": url_for("static", filename="vendor/workbox/"),
        "caches": {"pages": PAGE_CACHE, "api": API_CACHE},
        "page": url_for("tablet.page"),
    }
    source = Path(current_app.static_folder or "static") / "js" / "sw.js"
    body = f"self.GRIDOPS_SW = {json.dumps(config)};\n" + source.read_text("utf-8")
    response = Response(body, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Service-Worker-Allowed"] = "/"
    return response
