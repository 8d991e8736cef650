"""Who is asking, and what they may see and do: the one place where authorization lives.

Role verbs say what kind of thing a role may do at all (403 when not). Scopes say which
records: they become SQL conditions inside every query that lists or fetches a record, so a
record outside the actor's jurisdiction is simply not found (404), never "forbidden".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = (
    "inspector",
    "community_manager",
    "town_manager",
    "district_manager",
    "department_handler",
    "planner",
    "admin",
)
MANAGER_ROLES = ("community_manager", "town_manager", "district_manager")

# What each role may do at all; records are then limited by scope.
ROLE_VERBS: dict[str, set[str]] = {
    "inspector": {"read:map", "read:incidents", "write:incidents", "write:cases", "self:tokens"},
    "community_manager": {
        "read:map",
        "read:incidents",
        "write:incidents",
        "write:cases",
        "read:analytics",
        "admin:duties",  # inspectors, absences and profiles of their own area only
        "self:tokens",
    },
    "town_manager": {
        "read:map",
        "read:incidents",
        "write:incidents",
        "write:cases",
        "read:analytics",
        "admin:duties",  # inspectors, absences and profiles of their own area only
        "self:tokens",
    },
    "district_manager": {
        "read:map",
        "read:incidents",
        "write:incidents",
        "write:cases",
        "read:analytics",
        "admin:duties",  # inspectors, absences and profiles of their own area only
        "self:tokens",
    },
    "department_handler": {"read:map", "read:incidents", "write:cases", "self:tokens"},
    "planner": {"read:map", "read:incidents", "read:analytics", "self:tokens"},
    "admin": {"*"},
}

# Roles that see records in full. Planners see them without personal data or exact points;
# so do department handlers until a case is routed to their department (the dispatch work
# gives them their cases in full), because a department covers a whole district.
FULL_ACCESS_ROLES = {r for r in ROLES if r not in ("planner", "department_handler")}


@dataclass(frozen=True)
class Assignment:
    id: int
    role: str
    area_code: str | None = None
    grid_codes: tuple[str, ...] = ()
    department_id: int | None = None
    department_area: str | None = None
    category_codes: tuple[str, ...] = ()

    @property
    def areas(self) -> tuple[str, ...]:
        """The administrative areas this assignment covers."""
        if self.role == "department_handler":
            return (self.department_area,) if self.department_area else ()
        return (self.area_code,) if self.area_code else ()


@dataclass(frozen=True)
class Actor:
    user_id: int
    username: str
    display_name: str
    assignments: tuple[Assignment, ...] = ()
    via: str = "session"  # session | token
    token_id: int | None = None
    session_id: int | None = None
    token_first_use_in_hour: bool = False

    @property
    def roles(self) -> set[str]:
        return {a.role for a in self.assignments}

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def may(self, permission: str) -> bool:
        """May this actor do ``permission`` (``verb:resource``) on something in their scope?"""
        return any(
            "*" in ROLE_VERBS[a.role] or permission in ROLE_VERBS[a.role] for a in self.assignments
        )

    def scope(self) -> Scope:
        if self.is_admin:
            return Scope(everything=True)
        full_areas: list[str] = []
        full_grids: list[str] = []
        restricted_areas: list[str] = []
        for a in self.assignments:
            if a.role == "inspector":
                full_grids.extend(a.grid_codes)
            elif a.role in FULL_ACCESS_ROLES:
                full_areas.extend(a.areas)
            else:
                restricted_areas.extend(a.areas)
        return Scope(
            full_areas=tuple(sorted(set(full_areas))),
            full_grids=tuple(sorted(set(full_grids))),
            restricted_areas=tuple(sorted(set(restricted_areas))),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "roles": [
                {
                    "role": a.role,
                    "area_code": a.area_code,
                    "grid_codes": list(a.grid_codes),
                    "department_id": a.department_id,
                    "category_codes": list(a.category_codes),
                }
                for a in self.assignments
            ],
        }


def area_prefix(code: str) -> str:
    """Codes below an area begin with this: a city's districts share its first 4 digits."""
    return code[:4] if len(code) == 6 and code.endswith("00") else code


@dataclass(frozen=True)
class Scope:
    """Where an actor may look: in full (areas, inspector grids) or restricted (planners)."""

    everything: bool = False
    full_areas: tuple[str, ...] = ()
    full_grids: tuple[str, ...] = ()
    restricted_areas: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all_areas(self) -> tuple[str, ...]:
        return self.full_areas + self.restricted_areas

    def params(self) -> dict[str, Any]:
        return {
            "scope_full_areas": list(self.full_areas),
            "scope_full_grids": list(self.full_grids),
            "scope_all_areas": list(self.all_areas),
            "scope_all_prefixes": [area_prefix(c) + "%" for c in self.all_areas],
        }

    # SQL conditions over a table aliased ``t``; they use the parameters from ``params``.

    def _point_in(self, areas_param: str, geom: str) -> str:
        return (
            f"(EXISTS (SELECT 1 FROM admin_area s WHERE s.code = ANY(:{areas_param}) "
            f"AND ST_Covers(s.geom, {geom})) OR EXISTS (SELECT 1 FROM unit_grid sg "
            "WHERE sg.valid_to IS NULL AND sg.code = ANY(:scope_full_grids) "
            f"AND ST_Covers(sg.geom, {geom})))"
        )

    def point_in_full(self, geom: str = "t.geom") -> str:
        """Points the actor sees in full (personal data included)."""
        return "true" if self.everything else self._point_in("scope_full_areas", geom)

    def point_visible(self, geom: str = "t.geom") -> str:
        """Points the actor sees at all (planners: without personal data)."""
        return "true" if self.everything else self._point_in("scope_all_areas", geom)

    def grid_visible(self, code: str = "t.code") -> str:
        if self.everything:
            return "true"
        return f"({code} LIKE ANY(:scope_all_prefixes) OR {code} = ANY(:scope_full_grids))"

    def area_visible(self, code: str = "t.code") -> str:
        """An area is visible when it is inside the scope or an ancestor of it (context)."""
        if self.everything:
            return "true"
        return (
            f"({code} LIKE ANY(:scope_all_prefixes) "
            f"OR EXISTS (SELECT 1 FROM unnest(CAST(:scope_all_areas AS text[])) AS sa(c) "
            f"  WHERE sa.c LIKE (CASE WHEN length({code}) = 6 AND {code} LIKE '%00' "
            f"  THEN left({code}, 4) ELSE {code} END) || '%') "
            f"OR EXISTS (SELECT 1 FROM unnest(CAST(:scope_full_grids AS text[])) AS sg(c) "
            f"  WHERE sg.c LIKE (CASE WHEN length({code}) = 6 AND {code} LIKE '%00' "
            f"  THEN left({code}, 4) ELSE {code} END) || '%'))"
        )
