"""The planner's pages: the hotspot map (folium, gridops/web/planner_map.py) and the KPI
dashboard (Chart.js over ``GET /api/v1/kpis``). Both need ``read:analytics``: planners and
managers, each in their jurisdiction."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, g, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.errors import FieldError, InvalidInput
from gridops.incidents.workcal import TZ
from gridops.kpi import service as kpi_service
from gridops.web import planner_map
from gridops.web.i18n import register_messages, translate

bp = Blueprint("planner", __name__)

_PATTERNS_ZH = {
    "new": "新增",
    "consecutive": "连续",
    "intensifying": "加强",
    "persistent": "持续",
    "diminishing": "减弱",
    "sporadic": "零星",
    "oscillating": "振荡",
    "historical": "历史",
}

MESSAGES: dict[str, dict[str, str]] = {
    "planner.map.title": {"zh": "热点地图", "en": "Hotspot map"},
    "planner.map.label": {"zh": "事件热点地图（H3 六边形）", "en": "Map of incident hotspots"},
    "planner.pickers": {"zh": "选择分析", "en": "Choose the analysis"},
    "planner.kind": {"zh": "分析类型", "en": "Analysis"},
    "planner.kind.gistar": {"zh": "冷热点分析（Gi*）", "en": "Hot and cold spots (Gi*)"},
    "planner.kind.emerging": {"zh": "时空热点趋势", "en": "Emerging hot spots"},
    "planner.period": {"zh": "时段", "en": "Period"},
    "planner.preset.standard": {
        "zh": "默认（Gi* 上月；趋势 近12个月）",
        "en": "Standard (Gi*: last month; trends: last 12 months)",
    },
    "planner.preset.last_month": {"zh": "上个月", "en": "Last month"},
    "planner.preset.last_3_months": {"zh": "近3个月", "en": "Last 3 months"},
    "planner.preset.last_6_months": {"zh": "近6个月", "en": "Last 6 months"},
    "planner.preset.last_12_months": {"zh": "近12个月", "en": "Last 12 months"},
    "planner.preset.custom": {"zh": "自定义（下方日期）", "en": "Custom (dates below)"},
    "planner.start": {"zh": "开始日期", "en": "From"},
    "planner.end": {"zh": "结束日期（含）", "en": "To (inclusive)"},
    "planner.category": {"zh": "事件类别", "en": "Category"},
    "planner.category.all": {"zh": "全部类别", "en": "All categories"},
    "planner.category.whole": {"zh": "（整类）", "en": "(whole class)"},
    "planner.area": {"zh": "区域", "en": "Area"},
    "planner.code": {"zh": "代码", "en": "Code"},
    "planner.resolution": {"zh": "六边形大小（H3 级别）", "en": "Hexagon size (H3 resolution)"},
    "planner.resolution.7": {"zh": "7 级（约 5 km²）", "en": "7 (about 5 km²)"},
    "planner.resolution.8": {"zh": "8 级（约 0.7 km²）", "en": "8 (about 0.7 km²)"},
    "planner.resolution.9": {"zh": "9 级（约 0.1 km²）", "en": "9 (about 0.1 km²)"},
    "planner.show": {"zh": "显示", "en": "Show"},
    "planner.errors": {"zh": "请修改以下选择：", "en": "Please correct:"},
    "planner.run.stored": {"zh": "已存分析", "en": "Stored run"},
    "planner.run.computed": {"zh": "刚刚计算并保存的分析", "en": "Run computed and stored now"},
    "planner.run.asked": {"zh": "指定的分析", "en": "The run asked for"},
    "planner.run.nearest": {
        "zh": "此选择没有分析结果，显示最接近的已存分析",
        "en": "No run for this choice; showing the nearest stored run",
    },
    "planner.run.none": {
        "zh": "此选择没有分析结果，也没有已存分析",
        "en": "No run for this choice, and no stored run",
    },
    "planner.run.why": {"zh": "原因", "en": "Why"},
    "planner.run.open": {"zh": "打开此分析的选择", "en": "Open this run's choice"},
    "planner.run.events": {"zh": "起事件", "en": "incidents"},
    "planner.run.cells": {"zh": "个单元", "en": "cells"},
    "planner.run.hot": {"zh": "热点单元", "en": "hot cells"},
    "planner.run.cold": {"zh": "冷点单元", "en": "cold cells"},
    "planner.run.to": {"zh": "至", "en": "to"},
    "planner.run.step": {"zh": "时间步长", "en": "time step"},
    "planner.step.day": {"zh": "日", "en": "day"},
    "planner.step.week": {"zh": "周", "en": "week"},
    "planner.step.month": {"zh": "月", "en": "month"},
    "planner.run.number": {"zh": "分析编号", "en": "Run"},
    "planner.run.drawn": {"zh": "图上六边形", "en": "hexagons drawn"},
    "planner.table.caption": {"zh": "各类单元数（地图的文字说明）", "en": "Cells per class"},
    "planner.table.class": {"zh": "类别", "en": "Class"},
    "planner.table.cells": {"zh": "单元数", "en": "Cells"},
    "planner.layer.hotspots": {"zh": "热点六边形", "en": "Hotspot hexagons"},
    "planner.layer.district": {"zh": "区界", "en": "District boundaries"},
    "planner.layer.town": {"zh": "镇街界", "en": "Town boundaries"},
    "planner.layer.community": {"zh": "社区/村界", "en": "Community boundaries"},
    "planner.layer.grids": {"zh": "单元网格（放大后显示）", "en": "Unit grids (zoom in)"},
    "planner.layer.enterprises": {"zh": "企业", "en": "Enterprises"},
    "planner.layer.outlets": {"zh": "服务网点", "en": "Service outlets"},
    "planner.legend.gistar": {"zh": "Gi* 置信度", "en": "Gi* confidence"},
    "planner.legend.emerging": {"zh": "时空模式", "en": "Space-time pattern"},
    "planner.legend.note": {
        "zh": "仅显示显著或有事件的单元",
        "en": "Only significant cells and cells with incidents are drawn",
    },
    "planner.bin.3": {"zh": "热点（99% 置信度）", "en": "Hot spot, 99% confidence"},
    "planner.bin.2": {"zh": "热点（95% 置信度）", "en": "Hot spot, 95% confidence"},
    "planner.bin.1": {"zh": "热点（90% 置信度）", "en": "Hot spot, 90% confidence"},
    "planner.bin.0": {"zh": "不显著", "en": "Not significant"},
    "planner.bin.-1": {"zh": "冷点（90% 置信度）", "en": "Cold spot, 90% confidence"},
    "planner.bin.-2": {"zh": "冷点（95% 置信度）", "en": "Cold spot, 95% confidence"},
    "planner.bin.-3": {"zh": "冷点（99% 置信度）", "en": "Cold spot, 99% confidence"},
    "planner.pattern.no pattern": {"zh": "无明显模式", "en": "No pattern"},
    "planner.field.count": {"zh": "事件数", "en": "Incidents"},
    "planner.field.z": {"zh": "Gi* z 值", "en": "Gi* z"},
    "planner.field.p": {"zh": "p 值", "en": "p"},
    "planner.field.bin_label": {"zh": "置信度", "en": "Confidence"},
    "planner.field.pattern_label": {"zh": "时空模式", "en": "Pattern"},
    "planner.field.trend_z": {"zh": "趋势 z 值", "en": "Trend z"},
    "planner.field.cell": {"zh": "H3 单元", "en": "H3 cell"},
    "planner.name": {"zh": "名称", "en": "Name"},
    "planner.uscc": {"zh": "统一社会信用代码", "en": "Credit code"},
    "planner.industry": {"zh": "行业", "en": "Industry"},
    "planner.risk": {"zh": "风险等级", "en": "Risk level"},
    "planner.type": {"zh": "类型", "en": "Type"},
    # The KPI dashboard (kpi_dashboard.js reads the "planner.kpi." ones).
    "planner.kpi.title": {"zh": "案件指标看板", "en": "Case KPI dashboard"},
    "planner.kpi.period": {"zh": "统计周期", "en": "Period"},
    "planner.kpi.period.day": {"zh": "日", "en": "Day"},
    "planner.kpi.period.month": {"zh": "月", "en": "Month"},
    "planner.kpi.period.quarter": {"zh": "季度", "en": "Quarter"},
    "planner.kpi.period.year": {"zh": "年", "en": "Year"},
    "planner.kpi.start": {"zh": "开始日期", "en": "From"},
    "planner.kpi.end": {"zh": "结束日期（含）", "en": "To (inclusive)"},
    "planner.kpi.by": {"zh": "按…分组", "en": "Group by"},
    "planner.kpi.by.district": {"zh": "区", "en": "District"},
    "planner.kpi.by.town": {"zh": "镇街", "en": "Town"},
    "planner.kpi.by.community": {"zh": "社区/村", "en": "Community"},
    "planner.kpi.by.department": {"zh": "处置部门", "en": "Department"},
    "planner.kpi.area": {"zh": "区域", "en": "Area"},
    "planner.kpi.area.all": {"zh": "全部辖区", "en": "Whole jurisdiction"},
    "planner.kpi.show": {"zh": "更新", "en": "Update"},
    "planner.kpi.csv": {"zh": "下载 CSV", "en": "Download CSV"},
    "planner.kpi.loading": {"zh": "正在加载指标…", "en": "Loading KPIs…"},
    "planner.kpi.failed": {"zh": "指标加载失败", "en": "The KPIs could not be loaded"},
    "planner.kpi.noscript": {
        "zh": "图表需要 JavaScript；可下载 CSV 查看数据。",
        "en": "The charts need JavaScript; download the CSV for the figures.",
    },
    "planner.kpi.chart.rates": {
        "zh": "结案率与按期结案率（按周期）",
        "en": "Closure and on-time rates per period",
    },
    "planner.kpi.chart.counts": {
        "zh": "上报、立案、结案数（按周期）",
        "en": "Reported, filed and closed cases per period",
    },
    "planner.kpi.chart.groups": {"zh": "各分组案件数与结案率", "en": "Cases and closure per group"},
    "planner.kpi.table.periods": {"zh": "各周期指标", "en": "KPIs per period"},
    "planner.kpi.table.groups": {"zh": "各分组指标（整个时段）", "en": "KPIs per group"},
    "planner.kpi.col.bucket": {"zh": "周期", "en": "Period"},
    "planner.kpi.col.group": {"zh": "分组", "en": "Group"},
    "planner.kpi.col.reported": {"zh": "上报", "en": "Reported"},
    "planner.kpi.col.filed": {"zh": "立案", "en": "Filed"},
    "planner.kpi.col.closed": {"zh": "结案", "en": "Closed"},
    "planner.kpi.col.due": {"zh": "应结案", "en": "Due"},
    "planner.kpi.col.closed_on_time": {"zh": "按期结案", "en": "Closed on time"},
    "planner.kpi.col.closure_rate": {"zh": "结案率", "en": "Closure rate"},
    "planner.kpi.col.on_time_rate": {"zh": "按期结案率", "en": "On-time rate"},
    "planner.kpi.col.overdue_open": {"zh": "超期未结", "en": "Overdue open"},
    "planner.kpi.none": {"zh": "（无）", "en": "(none)"},
    "planner.kpi.empty": {"zh": "此选择没有数据", "en": "No data for this choice"},
    "planner.kpi.summary": {
        "zh": "{from} 至 {to}：上报 {reported} 件，结案 {closed} 件，"
        "结案率 {closure}，按期结案率 {ontime}。",
        "en": "{from} to {to}: {reported} reported, {closed} closed, closure rate {closure}, "
        "on-time rate {ontime}.",
    },
}
for _english, _chinese in _PATTERNS_ZH.items():
    for _side, _side_zh in (("hot", "热点"), ("cold", "冷点")):
        MESSAGES[f"planner.pattern.{_english} {_side} spot"] = {
            "zh": _chinese + _side_zh,
            "en": f"{_english.capitalize()} {_side} spot",
        }
register_messages(MESSAGES)

KPI_GROUPINGS = ("district", "town", "community", "department")
AREA_ORDER = ("district", "town", "community")
CHILD_LEVEL = {"district": "town", "town": "community", "community": "community"}


def _static(path: str) -> str:
    return url_for("static", filename=path)


def _run_summary(outcome: planner_map.RunOutcome) -> dict[str, Any] | None:
    run = outcome.run
    if run is None:
        return None
    start = datetime.fromisoformat(run["start"]).astimezone(TZ).date()
    end = datetime.fromisoformat(run["end"]).astimezone(TZ).date()
    summary = run.get("summary", {})
    if run["kind"] == "emerging":
        classes = [
            (translate(f"planner.pattern.{name}"), n)
            for name, n in summary.get("cells_by_category", {}).items()
        ]
    else:
        classes = [
            (translate(f"planner.bin.{b}"), summary.get("cells_by_bin", {}).get(str(b), 0))
            for b in (3, 2, 1, 0, -1, -2, -3)
        ]
    return {
        "run": run,
        "first_day": start.isoformat(),
        "last_day": (end - timedelta(days=1)).isoformat(),
        "classes": classes,
        "link": url_for("planner.hotspot_map", run=run["id"]),
    }


@bp.get("/planner/map")
@requires("read:analytics")
def hotspot_map() -> ResponseReturnValue:
    """The hotspot map of the run the pickers name (computed and stored if none is)."""
    actor = current_actor()
    assert actor is not None  # authorize() redirected otherwise
    db = get_session()
    scope = actor.scope()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    today = datetime.now(TZ).date()
    errors: list[FieldError] = []
    outcome = None
    form: dict[str, Any] = dict(request.args)
    try:
        choice = planner_map.parse_choice(request.args, today)
        outcome = planner_map.resolve_run(db, actor, choice)
        form = {**outcome.choice.query(), "start": outcome.choice.start,
                "end": outcome.choice.end}  # fmt: skip
    except InvalidInput as exc:
        errors = exc.errors
    timings["run"] = time.perf_counter() - started
    parts, drawn = None, 0
    if outcome is not None:
        started = time.perf_counter()
        parts, drawn = planner_map.map_parts(
            db,
            actor,
            outcome.run,
            translate,
            g.lang,
            area=outcome.choice.area,
            static_url=_static,
            api_root=request.script_root,
            local_prefix=request.script_root + "/static/",
        )
        timings["map"] = time.perf_counter() - started
    response = render_template(
        "planner_map.html",
        lang=g.lang,
        form=form,
        errors=errors,
        outcome=outcome,
        summary=_run_summary(outcome) if outcome else None,
        parts=parts,
        drawn=drawn,
        areas=planner_map.area_options(db, scope),
        categories=planner_map.category_options(db),
        presets=planner_map.PRESETS,
        resolutions=planner_map.RESOLUTIONS,
        kinds=("gistar", "emerging"),
    )
    timing = ", ".join(f"{k};dur={v * 1000:.0f}" for k, v in timings.items())
    return response, 422 if errors else 200, {"Server-Timing": timing}


def kpi_areas(session: Any, scope: Any) -> list[dict[str, str]]:
    """Areas the dashboard can narrow to: districts and towns inside the jurisdiction, and
    communities when the jurisdiction holds few of them (a town's, a community's own)."""
    rows = session.execute(
        text(
            "SELECT t.code, t.name, t.level FROM admin_area t "
            "WHERE t.level IN ('district', 'town', 'community') "
            "ORDER BY array_position(ARRAY['district','town','community'], t.level::text), "
            "t.code"
        )
    ).all()
    inside = [r for r in rows if planner_map.service.area_in_scope(r.code, scope)]
    communities = [r for r in inside if r.level == "community"]
    if len(communities) > 60:
        inside = [r for r in inside if r.level != "community"]
    return [{"code": r.code, "name": r.name, "level": r.level} for r in inside]


def default_grouping(scope: Any) -> str:
    """The level below the jurisdiction: a city by district, a district by town, a town by
    community; a community (one area) by handling department."""
    if scope.everything or not scope.all_areas:
        return "district"
    code = scope.all_areas[0]
    if len(code) == 6:
        return "district" if code.endswith("00") else "town"
    return "community" if len(code) == 9 else "department"


@bp.get("/planner/kpis")
@requires("read:analytics")
def kpi_dashboard() -> ResponseReturnValue:
    """The KPI dashboard; its script reads ``/api/v1/kpis`` with the same query."""
    actor = current_actor()
    assert actor is not None
    today = datetime.now(TZ).date()
    args = request.args
    errors: list[FieldError] = []
    by = args.get("by") or default_grouping(actor.scope())
    if by not in KPI_GROUPINGS:
        errors.append(FieldError("by", f"one of {', '.join(KPI_GROUPINGS)}"))
        by = "district"
    # Twelve monthly buckets: this month so far and the eleven before it.
    defaults = {"period": "month", "start": planner_map.month_start(today, 11), "end": today}
    query: dict[str, Any] = {**defaults}
    try:
        parsed = kpi_service.parse_query(
            {
                "period": args.get("period") or defaults["period"],
                "start": args.get("start") or defaults["start"].isoformat(),
                "end": args.get("end") or defaults["end"].isoformat(),
            },
            today=today,
        )
        query.update(period=parsed["period"], start=parsed["start"], end=parsed["end"])
    except InvalidInput as exc:
        errors += exc.errors
    areas = kpi_areas(get_session(), actor.scope())
    area = args.get("area") or ""
    levels = {a["code"]: a["level"] for a in areas}
    if area and area not in levels:
        errors.append(FieldError("area", "an area of your jurisdiction"))
        area = ""
    # Narrowed to an area, its periods are summed from its children (the API has no area
    # filter), and area groups must lie inside it: a district's towns, a town's communities.
    series_by = CHILD_LEVEL[levels[area]] if area else None
    if area and by in AREA_ORDER and AREA_ORDER.index(by) <= AREA_ORDER.index(levels[area]):
        by = series_by or by
    config = {
        "api": url_for("kpi.kpi_table"),
        "period": query["period"],
        "start": query["start"].isoformat(),
        "end": query["end"].isoformat(),
        "by": by,
        "area": area,
        "seriesBy": series_by,
        "lang": g.lang,
        "areaNames": {a["code"]: a["name"] for a in areas},
    }
    csv_query = {"format": "csv", "period": config["period"], "start": config["start"],
                 "end": config["end"], "by": by}  # fmt: skip
    return (
        render_template(
            "kpi_dashboard.html",
            lang=g.lang,
            config=config,
            errors=errors,
            areas=areas,
            periods=kpi_service.PERIODS,
            groupings=KPI_GROUPINGS,
            csv_url=url_for("kpi.kpi_table", **csv_query),
        ),
        422 if errors else 200,
    )
