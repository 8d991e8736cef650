"""The dispatcher's board: the jurisdiction's open cases on a map coloured by time left, the
queue beside it, assignment and workflow actions from either, the inspectors' workload and
today's patrol tracks.

The page is a thin template; its script reads the existing API (queue, assignment,
transitions, workload, patrol day, areas, grid tiles). One read was missing: every open case
of the jurisdiction with its clock flags (overdue, due soon, paused), its assignee and the
actions the dispatcher may take on it. The case list (``/api/v1/cases``) has no "due soon"
(that needs the working calendar), no assignee and no actions, and the queue holds only the
cases at risk; ``GET /api/v1/board/cases`` gives exactly that, with the queue's jurisdiction
and the queue's own "due soon" rule, so the map and the queue never disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, g, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.api import feature_page_response, geojson_response
from gridops.auth.actor import Actor, Assignment
from gridops.auth.web import current_actor, requires
from gridops.db import get_session
from gridops.dispatch.queue import (
    GROUPS,
    assignee_of,
    department_of,
    iso,
    jurisdiction,
    role_columns,
    soon_thresholds,
)
from gridops.errors import FieldError, InvalidInput, NotFound
from gridops.incidents.workflow import (
    DISPATCH,
    PAUSED_STATES,
    STATES,
    TRANSITIONS,
    allowed_actions,
)
from gridops.parsing import is_digits
from gridops.web.i18n import register_messages

bp = Blueprint("board", __name__)

REFRESH_SECONDS = 30
MAX_LIMIT = 1000
PARAMETERS = frozenset({"limit", "cursor"})
DESCRIPTION_CHARS = 200
# Offered on the board as buttons; mark_duplicate needs the original case picked, which is the
# case page's work, not a button's.
BOARD_ACTIONS = tuple(a for a in TRANSITIONS if a != "mark_duplicate")

_STATUS_ZH = {
    "reported": "已上报", "verified": "已核实", "filed": "已立案", "dispatched": "已派遣",
    "in_handling": "处置中", "extension_requested": "延期申请中", "handled": "已处置待核查",
    "checked": "核查通过", "closed": "已结案", "returned": "已回退", "parked": "挂账",
    "void": "已作废",
}  # fmt: skip
_STATUS_EN = {
    "reported": "Reported", "verified": "Verified", "filed": "Filed", "dispatched": "Dispatched",
    "in_handling": "In handling", "extension_requested": "Extension requested",
    "handled": "Handled, to check", "checked": "Checked", "closed": "Closed",
    "returned": "Returned", "parked": "Parked", "void": "Void",
}  # fmt: skip
_ACTION_ZH = {
    "verify": "核实", "file": "立案", "void": "不予立案", "dispatch": "派遣", "accept": "受理",
    "return": "回退", "request_extension": "申请延期", "approve_extension": "批准延期",
    "refuse_extension": "驳回延期", "report_handled": "处置反馈", "handle_on_spot": "自行处置",
    "check_pass": "核查通过", "rework": "返工", "close": "结案", "park": "挂账",
    "resume": "恢复办理", "mark_duplicate": "重复上报",
}  # fmt: skip
_ACTION_EN = {
    "verify": "Verify", "file": "File", "void": "Void", "dispatch": "Dispatch",
    "accept": "Accept", "return": "Return", "request_extension": "Request extension",
    "approve_extension": "Approve extension", "refuse_extension": "Refuse extension",
    "report_handled": "Report handled", "handle_on_spot": "Handle on the spot",
    "check_pass": "Pass the check", "rework": "Rework", "close": "Close", "park": "Park",
    "resume": "Resume", "mark_duplicate": "Mark duplicate",
}  # fmt: skip
_GROUPS = {
    "unassigned": ("待分派", "Unassigned"),
    "returned": ("被退回", "Returned"),
    "overdue": ("已超时", "Overdue"),
    "due_soon": ("即将到期", "Due soon"),
}
_CLOCK = {
    "overdue": ("已超时", "Overdue"),
    "due_soon": ("即将到期", "Due soon"),
    "on_time": ("按时办理中", "On time"),
    "paused": ("暂停计时（挂账或延期申请）", "Clock paused (parked or extension)"),
    "no_deadline": ("待派遣，未计时", "Not dispatched yet, no deadline"),
}

MESSAGES: dict[str, dict[str, str]] = {
    **{f"board.status.{s}": {"zh": _STATUS_ZH[s], "en": _STATUS_EN[s]} for s in STATES},
    **{f"board.action.{a}": {"zh": _ACTION_ZH[a], "en": _ACTION_EN[a]} for a in TRANSITIONS},
    **{f"board.group.{k}": {"zh": zh, "en": en} for k, (zh, en) in _GROUPS.items()},
    **{f"board.clock.{k}": {"zh": zh, "en": en} for k, (zh, en) in _CLOCK.items()},
    "board.title": {"zh": "派遣调度台", "en": "Dispatch board"},
    "board.everywhere": {"zh": "全市", "en": "All areas"},
    "board.refresh": {"zh": "刷新", "en": "Refresh"},
    "board.auto": {"zh": "自动刷新（每 30 秒）", "en": "Refresh every 30 s"},
    "board.loading": {"zh": "正在载入…", "en": "Loading…"},
    "board.updated": {"zh": "更新于 {t}", "en": "Updated {t}"},
    "board.paused": {
        "zh": "更新于 {t}；正在办理案件，自动刷新暂停",
        "en": "Updated {t}; auto refresh paused while a case is open",
    },
    "board.load_failed": {
        "zh": "数据载入失败（{detail}），稍后自动重试",
        "en": "Loading failed ({detail}); retrying shortly",
    },
    "board.map": {"zh": "辖区在办案件地图", "en": "Map of the open cases"},
    "board.legend": {"zh": "图例", "en": "Legend"},
    "board.legend.queue": {"zh": "粗黑边：在待办队列中", "en": "Thick black edge: in the queue"},
    "board.legend.track": {"zh": "今日巡查轨迹", "en": "Today's patrol track"},
    "board.layer.grids": {"zh": "单元网格", "en": "Unit grids"},
    "board.layer.areas": {"zh": "区域边界", "en": "Area boundaries"},
    "board.layer.cases": {"zh": "在办案件", "en": "Open cases"},
    "board.layer.tracks": {"zh": "今日巡查轨迹", "en": "Today's patrol tracks"},
    "board.queue": {"zh": "待办队列", "en": "Queue"},
    "board.queue.count": {"zh": "共 {n} 件", "en": "{n} cases"},
    "board.queue.empty": {
        "zh": "队列为空：没有待分派或有超时风险的案件。",
        "en": "The queue is empty: no case waits for dispatch or is at risk.",
    },
    "board.case": {"zh": "案件", "en": "Case"},
    "board.field.status": {"zh": "状态", "en": "Status"},
    "board.field.category": {"zh": "类别", "en": "Category"},
    "board.field.grid": {"zh": "网格", "en": "Grid"},
    "board.field.deadline": {"zh": "处置时限", "en": "Deadline"},
    "board.field.department": {"zh": "处置部门", "en": "Department"},
    "board.field.assignee": {"zh": "当前指派", "en": "Assigned to"},
    "board.field.suggestion": {"zh": "派遣建议", "en": "Suggested"},
    "board.field.description": {"zh": "描述", "en": "Description"},
    "board.field.received": {"zh": "受理时间", "en": "Received"},
    "board.none": {"zh": "无", "en": "none"},
    "board.aside": {"zh": "{text}（{detail}）", "en": "{text} ({detail})"},
    "board.pair": {"zh": "{label}：{value}", "en": "{label}: {value}"},
    "board.left": {"zh": "剩余 {t}", "en": "{t} left"},
    "board.over": {"zh": "超时 {t}", "en": "{t} overdue"},
    "board.days": {"zh": "{n}天", "en": "{n} d "},
    "board.hours": {"zh": "{n}小时", "en": "{n} h "},
    "board.minutes": {"zh": "{n}分钟", "en": "{n} min"},
    "board.assign.to": {"zh": "指派给", "en": "Assign to"},
    "board.assign.pick": {"zh": "— 请选择人员 —", "en": "— choose a person —"},
    "board.assign.grid_people": {"zh": "本网格网格员", "en": "Inspectors of this grid"},
    "board.assign.primary": {"zh": "（主责）", "en": " (primary)"},
    "board.assign.others": {"zh": "辖区其他人员", "en": "Other people of the area"},
    "board.assign.department": {"zh": "处置部门", "en": "Department"},
    "board.assign.keep": {"zh": "不变", "en": "unchanged"},
    "board.assign.note": {"zh": "指派备注（可选）", "en": "Note (optional)"},
    "board.assign.submit": {"zh": "指派", "en": "Assign"},
    "board.reassign.submit": {"zh": "改派", "en": "Reassign"},
    "board.assign.need": {"zh": "请先选择要指派的人员。", "en": "Choose a person first."},
    "board.assign.done": {
        "zh": "案件 #{id} 已指派给 {who}。",
        "en": "Case #{id} assigned to {who}.",
    },
    "board.transition.note": {
        "zh": "办理说明（回退、返工、挂账、不予立案等须填写）",
        "en": "Note (required to refuse, rework, park or void)",
    },
    "board.transition.need_note": {
        "zh": "“{action}”须填写办理说明。",
        "en": "\u201c{action}\u201d needs a note.",
    },
    "board.transition.done": {
        "zh": "案件 #{id}：{action}完成，现为“{status}”。",
        "en": "Case #{id}: {action} done, now \u201c{status}\u201d.",
    },
    "board.transition.none": {
        "zh": "当前状态下没有您可办理的流程操作。",
        "en": "No workflow step of yours in this state.",
    },
    "board.stale": {
        "zh": "案件 #{id} 刚被他人更新（现为第 {version} 版，状态“{status}”），已重新载入最新数据，"
        "请核对后重试。",
        "en": "Case #{id} was just changed by someone else (now version {version}, "
        "\u201c{status}\u201d). The latest data is loaded: check it and try again.",
    },
    "board.gone": {
        "zh": "案件 #{id} 已不在您辖区的在办案件中。",
        "en": "Case #{id} is no longer among the open cases of your area.",
    },
    "board.failed": {"zh": "未能完成：{detail}", "en": "Not done: {detail}"},
    "board.working": {"zh": "正在提交…", "en": "Sending…"},
    "board.close": {"zh": "收起", "en": "Close"},
    "board.workload": {"zh": "人员工作量与今日巡查", "en": "Workload and today's patrols"},
    "board.workload.people": {"zh": "网格员及经办人员", "en": "Inspectors and staff"},
    "board.workload.departments": {"zh": "处置部门", "en": "Departments"},
    "board.workload.empty": {"zh": "暂无数据", "en": "Nothing yet"},
    "board.col.person": {"zh": "人员", "en": "Person"},
    "board.col.department": {"zh": "部门", "en": "Department"},
    "board.col.open": {"zh": "在办案件", "en": "Open cases"},
    "board.col.due_today": {"zh": "今日到期", "en": "Due today"},
    "board.col.overdue": {"zh": "已超时", "en": "Overdue"},
    "board.col.tasks": {"zh": "今日巡查任务", "en": "Tasks today"},
    "board.col.track": {"zh": "今日轨迹", "en": "Track today"},
    "board.col.coverage": {"zh": "网格走访", "en": "Grids visited"},
    "board.track.km": {"zh": "{km} 公里", "en": "{km} km"},
    "board.track.none": {"zh": "无轨迹", "en": "no track"},
    "board.refused.title": {
        "zh": "派遣调度台供管理人员使用",
        "en": "The dispatch board is for managers",
    },
    "board.refused.text": {
        "zh": "调度台供社区、街道和区的管理员派遣案件。"
        "网格员请在巡查上报页面查看自己的任务和上报事件。",
        "en": "Community, town and district managers dispatch cases here. Inspectors see "
        "their tasks and report incidents on the patrol page.",
    },
    "board.refused.link": {"zh": "前往巡查上报", "en": "Go to patrol & report"},
    "board.refused.home": {"zh": "返回首页", "en": "Back to the start page"},
}
register_messages(MESSAGES)


# -- the cases of the board ------------------------------------------------------------------


def _case_rows(
    session: Session,
    actor: Actor,
    *,
    case_id: int | None = None,
    limit: int = MAX_LIMIT,
    after: int | None = None,
    now: datetime | None = None,
) -> tuple[list[Any], list[Assignment]]:
    """Rows of the actor's dispatch jurisdiction: its open cases in id order (keyset after
    ``after``), or the one case ``case_id`` whatever its state; and the role assignments
    whose ``role_<n>`` column says if they cover the case."""
    where = jurisdiction(actor)  # NotAllowed (403) without a dispatcher's role
    now = now or session.execute(text("SELECT now()")).scalar_one()
    limits, soon = soon_thresholds(session, where, now)
    role_sql, role_params, assignments = role_columns(actor)
    clauses = [where.case_condition("q.geom")]
    params: dict[str, Any] = {
        **where.params(),
        **role_params,
        "now": now,
        "limits": limits,
        "soon": soon,
        "limit": limit + 1,
    }
    if case_id is not None:
        clauses.append("q.id = :case_id")
        params["case_id"] = case_id
    else:
        clauses.append("q.status NOT IN ('closed', 'void')")
    if after is not None:
        clauses.append("q.id > :after")
        params["after"] = after
    rows = session.execute(
        text(
            f"""
            WITH soon AS (
                SELECT * FROM unnest(CAST(:limits AS integer[]), CAST(:soon AS timestamptz[]))
                    AS s (limit_hours, before)
            )
            SELECT q.id, q.status, q.version, ST_X(q.geom) AS lon, ST_Y(q.geom) AS lat,
                   q.received_at, q.deadline_at, q.assigned_at,
                   left(q.description, {DESCRIPTION_CHARS}) AS description,
                   q.status NOT IN ('closed', 'void') AND coalesce(q.deadline_at < :now, false)
                       AS overdue,
                   q.status NOT IN ('closed', 'void') AND coalesce(q.deadline_at >= :now
                       AND q.deadline_at < s.before, false) AS warning,
                   c.code AS category_code, c.name_zh AS category_name, g.code AS grid_code,
                   d.code AS department_code, d.name AS department_name,
                   u.id AS assignee_id, u.username AS assignee_username,
                   u.display_name AS assignee_name
                   {role_sql}
            FROM incident q
            LEFT JOIN soon s ON s.limit_hours = q.time_limit_hours
            JOIN category c ON c.id = q.category_id
            LEFT JOIN unit_grid g ON g.id = q.grid_id
            LEFT JOIN department d ON d.id = q.department_id
            LEFT JOIN app_user u ON u.id = q.assignee_id
            WHERE {" AND ".join(clauses)}
            ORDER BY q.id LIMIT :limit
            """
        ),
        params,
    ).all()
    return list(rows), assignments


def _feature(row: Any, assignments: list[Assignment]) -> dict[str, Any]:
    roles = {a.role for n, a in enumerate(assignments) if getattr(row, f"role_{n}")}
    final = row.status in ("closed", "void")
    return {
        "type": "Feature",
        "id": row.id,
        "geometry": {"type": "Point", "coordinates": [row.lon, row.lat]},
        "properties": {
            "status": row.status,
            "version": row.version,
            "category": {"code": row.category_code, "name": row.category_name},
            "grid_code": row.grid_code,
            "description": row.description or "",
            "received_at": iso(row.received_at),
            "deadline_at": iso(row.deadline_at),
            "overdue": bool(row.overdue),
            "warning": bool(row.warning),
            "paused": row.status in PAUSED_STATES,
            "department": department_of(row),
            "assignee": assignee_of(row),
            "assigned_at": iso(row.assigned_at),
            "assignable": not final,
            "actions": [a for a in allowed_actions(row.status, roles) if a in BOARD_ACTIONS],
        },
    }


def board_cases(
    session: Session,
    actor: Actor,
    *,
    limit: int = MAX_LIMIT,
    after: int | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the open cases in the actor's dispatch jurisdiction (id order) as GeoJSON
    features, and the id to continue after (None on the last page). NotAllowed (403) for
    anyone without a dispatcher's role."""
    rows, assignments = _case_rows(session, actor, limit=limit, after=after, now=now)
    features = [_feature(row, assignments) for row in rows[:limit]]
    return features, (rows[limit - 1].id if len(rows) > limit else None)


def board_case(
    session: Session, actor: Actor, case_id: int, *, now: datetime | None = None
) -> dict[str, Any]:
    """One case of the jurisdiction as the board shows it, in whatever state (the board reloads
    a case after a stale write: it may have been closed meanwhile); NotFound outside it."""
    rows, assignments = _case_rows(session, actor, case_id=case_id, now=now)
    if not rows:
        raise NotFound(f"no case {case_id}")
    return _feature(rows[0], assignments)


def parse_page(args: Any) -> tuple[int, int | None]:
    """``limit`` (1 to MAX_LIMIT, default MAX_LIMIT) and ``cursor`` (from the next link)."""
    errors = [
        FieldError(n, "not a parameter: limit, cursor") for n in sorted(set(args) - PARAMETERS)
    ]
    raw_limit, raw_cursor = args.get("limit", ""), args.get("cursor", "")
    limit, after = MAX_LIMIT, None
    if raw_limit:
        if is_digits(raw_limit) and 1 <= int(raw_limit) <= MAX_LIMIT:
            limit = int(raw_limit)
        else:
            errors.append(FieldError("limit", f"a whole number from 1 to {MAX_LIMIT}"))
    if raw_cursor:
        if is_digits(raw_cursor) and len(raw_cursor) <= 18:
            after = int(raw_cursor)
        else:
            errors.append(FieldError("cursor", "use the next link as given"))
    if errors:
        raise InvalidInput("the board query is not valid", errors)
    return limit, after


# -- what the page's script needs ------------------------------------------------------------


def page_config(session: Session, actor: Actor) -> dict[str, Any]:
    """The jurisdiction, the workflow's note rules and the API addresses, for board.js."""
    where = jurisdiction(actor)
    areas = session.execute(
        text("SELECT code, name, level FROM admin_area WHERE code = ANY(:codes) ORDER BY code"),
        {"codes": list(where.areas)},
    ).all()

    def address(endpoint: str, *placeholders: str, **values: Any) -> str:
        """The endpoint's URL with ``{name}`` where the script puts each placeholder's value
        (routed with stand-in numbers, so that the URL rules stay in one place)."""
        stand_ins = {name: 900001 + n for n, name in enumerate(placeholders)}
        url = url_for(endpoint, **values, **stand_ins)
        for name, number in stand_ins.items():
            url = url.replace(str(number), "{" + name + "}")
        return url.replace("%7B", "{").replace("%7D", "}")

    return {
        "everywhere": where.everything,
        "areas": [{"code": a.code, "name": a.name, "level": a.level} for a in areas],
        "groups": list(GROUPS),
        "actions": list(BOARD_ACTIONS),
        "needs_note": sorted(a for a, t in TRANSITIONS.items() if t.needs_note),
        "refresh_seconds": REFRESH_SECONDS,
        "urls": {
            "cases": url_for("board.cases"),
            "case": address("board.case", "case_id"),
            "queue": url_for("dispatch.queue_view"),
            "workload": url_for("dispatch.workload"),
            "patrol": url_for("patrol.day"),
            "areas": url_for("grids.areas"),
            "area": address("grids.area", code="{code}"),
            "grid_people": address("dispatch.grid_inspectors", grid_code="{grid_code}"),
            "assign": address("dispatch.case_assign", "case_id"),
            "transition": address("cases.case_transition", "case_id"),
            "grid_tiles": address("tiles.tile", "z", "x", "y", layer="grids"),
        },
    }


# -- HTTP ------------------------------------------------------------------------------------


def _actor() -> Actor:
    actor = current_actor()
    assert actor is not None  # authorize() answered first
    return actor


@bp.get("/board")
@requires("write:cases")
def page() -> ResponseReturnValue:
    """The board for dispatchers (managers, admins); others with ``write:cases`` (inspectors,
    department handlers) get a polite 403 page pointing to their own page."""
    actor = _actor()
    if not (actor.is_admin or actor.roles & DISPATCH):
        to_tablet = "tablet.page" in current_app.view_functions and "inspector" in actor.roles
        link = url_for("tablet.page") if to_tablet else url_for("web.index")
        label = "board.refused.link" if to_tablet else "board.refused.home"
        return (
            render_template("board.html", lang=g.lang, refused=True, link=link, link_label=label),
            403,
        )
    config = page_config(get_session(), actor)
    return render_template("board.html", lang=g.lang, refused=False, config=config)


@bp.get("/api/v1/board/cases")
@requires("write:cases")
def cases() -> ResponseReturnValue:
    """``?limit=&cursor=``: the open cases of the caller's dispatch jurisdiction as GeoJSON,
    with clock flags (overdue, warning = due soon, paused), assignee and the caller's actions;
    ``next`` link (and ``Link`` header) while more follow. 403 without a dispatcher's role."""
    limit, after = parse_page(request.args)
    features, last = board_cases(get_session(), _actor(), limit=limit, after=after)
    return feature_page_response(features, "board.cases", last, limit)


@bp.get("/api/v1/board/cases/<int:case_id>")
@requires("write:cases")
def case(case_id: int) -> ResponseReturnValue:
    """One case of the jurisdiction as the board shows it (any state); 404 outside it."""
    feature = board_case(get_session(), _actor(), case_id)
    response = geojson_response(feature)
    response.headers["ETag"] = f'"{feature["properties"]["version"]}"'
    return response
