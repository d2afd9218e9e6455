"""The duty list (权责清单): which department handles a ticket of a category in
a district, and how long it has, read from a TOML file the deployment edits.

    [time_limits]                       hours, per urgency (一般, 较急, 紧急)
    default = { "一般" = 120, "较急" = 48, "紧急" = 4 }
    "供水"  = { "紧急" = 2 }             a category's own (the others from default)

    [[department]]
    name  = "市水务集团"
    users = ["water"]                   console users (role department) acting for it

    [[duty]]
    category   = "供水"                 a category of the taxonomy
    district   = "*"                    a district of the gazetteer, a list of them, or "*"
    department = "市水务集团"            a [[department]] of this file

Every problem is reported as ``file:line: message`` (an unknown category,
district, department or urgency, a category and district given twice, a bad
number); the file as a whole is refused, so a reload keeps the running list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.toml_lines import KeyLines, Problem, TomlSyntaxError, line_containing, parse

URGENCIES = ("一般", "较急", "紧急")  # the prefill's urgency values (ivr/prefill/urgency.py)
EVERY_DISTRICT = "*"
DEFAULT_LIMITS = "default"
MAX_HOURS = 24 * 366
_HEADER = re.compile(r"\s*\[")
_TOP_KEYS = ("time_limits", "department", "duty")
_DEPARTMENT_KEYS = ("name", "users")
_DUTY_KEYS = ("category", "district", "department")


class DutyListError(ValueError):
    """The duty list cannot be used; ``problems`` each name file and line."""

    def __init__(self, problems: list[Problem] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Department:
    name: str
    users: tuple[str, ...]


@dataclass(frozen=True)
class DutyList:
    departments: Mapping[str, Department]
    # (category, district or "*") -> department
    duties: Mapping[tuple[str, str], str]
    # category or "default" -> urgency -> hours
    limits: Mapping[str, Mapping[str, float]]
    source: str
    version: str  # the first 12 hex digits of the file's sha256

    def department_for(self, category: str | None, district: str | None) -> str | None:
        """The department the list names for this category and district (the
        district's own line first, then the category's "*"); None: no line."""
        if not category:
            return None
        if district and (category, district) in self.duties:
            return self.duties[(category, district)]
        return self.duties.get((category, EVERY_DISTRICT))

    def time_limit_hours(self, category: str | None, urgency: str | None) -> float:
        """Hours a department has for a ticket (an unknown urgency counts as 一般)."""
        level = urgency if urgency in URGENCIES else URGENCIES[0]
        own = self.limits.get(category or "", {})
        return own.get(level, self.limits[DEFAULT_LIMITS][level])

    def department_of(self, user: str) -> str | None:
        """The department a console user acts for; None when none lists them."""
        for department in self.departments.values():
            if user in department.users:
                return department.name
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "version": self.version,
            "departments": [
                {"name": d.name, "users": list(d.users)} for d in self.departments.values()
            ],
            "duties": [
                {"category": c, "district": d, "department": dep}
                for (c, d), dep in self.duties.items()
            ],
            "time_limits": {k: dict(v) for k, v in self.limits.items()},
        }


def load_duty_list(
    path: Path, *, categories: Collection[str], districts: Collection[str]
) -> DutyList:
    """Read and check the duty list against the taxonomy's categories and the
    gazetteer's districts; DutyListError (every problem, file:line) if wrong."""
    text = read_duty_list(path)
    return parse_duty_list(text, str(path), categories=categories, districts=districts)


def read_duty_list(path: Path) -> str:
    """A duty list file's text; DutyListError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DutyListError(f"{path}: no such file ([dispatch] duty_list)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DutyListError(f"{path}: cannot read: {exc}") from None


def parse_duty_list(
    text: str, source: str, *, categories: Collection[str], districts: Collection[str]
) -> DutyList:
    try:
        data = parse(text)
    except TomlSyntaxError as exc:
        problem = Problem(source, exc.line or 1, f"not valid TOML: {exc.reason}")
        raise DutyListError([problem]) from None
    return _Reader(text, source, categories, districts).read(data)


class _Reader:
    def __init__(
        self, text: str, source: str, categories: Collection[str], districts: Collection[str]
    ) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.source = source
        self.keys = KeyLines(text)
        self.categories = set(categories)
        self.districts = set(districts)
        self.problems: list[Problem] = []

    def fail(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.source, line or 1, message))

    def in_table(self, array: str, index: int, key: str) -> int | None:
        """The line of ``key = `` in the ``index``-th ``[[array]]`` table."""
        start = self.keys.array_table((array,), index)
        if start is None:
            return None
        for number in range(start + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if _HEADER.match(line):
                break
            code = line.split("#", 1)[0]
            if re.match(rf"\s*{re.escape(key)}\s*=", code):
                return number
        return start

    def read(self, data: dict[str, Any]) -> DutyList:
        for key in data:
            if key not in _TOP_KEYS:
                self.fail(
                    self.keys.nearest((key,)),
                    f"unknown key {key!r} (known: {', '.join(_TOP_KEYS)})",
                )
        limits = self.read_limits(data.get("time_limits"))
        departments = self.read_departments(data.get("department"))
        duties = self.read_duties(data.get("duty"), departments)
        if self.problems:
            raise DutyListError(self.problems)
        return DutyList(
            departments=departments,
            duties=duties,
            limits=limits,
            source=self.source,
            version=hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12],
        )

    def read_limits(self, table: object) -> dict[str, dict[str, float]]:
        if not isinstance(table, dict):
            self.fail(
                self.keys.nearest(("time_limits",)),
                '[time_limits] is missing: default = { "一般" = 120, "较急" = 48, "紧急" = 4 } '
                "(hours)",
            )
            return {DEFAULT_LIMITS: dict.fromkeys(URGENCIES, 1.0)}
        limits: dict[str, dict[str, float]] = {}
        for name, hours in table.items():
            line = self.keys.nearest(("time_limits", name))
            if name != DEFAULT_LIMITS and name not in self.categories:
                self.fail(line, f"time_limits: {name!r} is not a category of the taxonomy")
                continue
            if not isinstance(hours, dict):
                self.fail(line, f"time_limits.{name}: want {{ urgency = hours, ... }}")
                continue
            own: dict[str, float] = {}
            for urgency, value in hours.items():
                if urgency not in URGENCIES:
                    self.fail(
                        line,
                        f"time_limits.{name}: {urgency!r} is not an urgency "
                        f"({', '.join(URGENCIES)})",
                    )
                elif (
                    not isinstance(value, int | float)
                    or isinstance(value, bool)
                    or not 0 < value <= MAX_HOURS
                ):
                    self.fail(
                        line,
                        f"time_limits.{name}.{urgency}: want hours, a number over 0 and at "
                        f"most {MAX_HOURS}",
                    )
                else:
                    own[urgency] = float(value)
            limits[name] = own
        default = limits.get(DEFAULT_LIMITS)
        if default is None:
            self.fail(
                self.keys.nearest(("time_limits",)),
                f"time_limits: default is missing (hours for each of {', '.join(URGENCIES)})",
            )
            limits[DEFAULT_LIMITS] = dict.fromkeys(URGENCIES, 1.0)
        elif missing := [u for u in URGENCIES if u not in default]:
            self.fail(
                self.keys.nearest(("time_limits", DEFAULT_LIMITS)),
                f"time_limits.default: hours for {', '.join(missing)} are missing",
            )
        return limits

    def read_departments(self, tables: object) -> dict[str, Department]:
        if not isinstance(tables, list) or not tables:
            self.fail(None, "no departments: add [[department]] tables with name and users")
            return {}
        found: dict[str, Department] = {}
        users_seen: dict[str, str] = {}
        for index, table in enumerate(tables):
            head = self.keys.array_table(("department",), index)
            for key in table:
                if key not in _DEPARTMENT_KEYS:
                    self.fail(
                        self.in_table("department", index, key),
                        f"department: unknown key {key!r} (known: {', '.join(_DEPARTMENT_KEYS)})",
                    )
            name = table.get("name")
            if not isinstance(name, str) or not name.strip():
                self.fail(head, "department: name is missing (the department's name)")
                continue
            name = name.strip()
            if name in found:
                self.fail(self.in_table("department", index, "name"), f"{name!r} is listed twice")
                continue
            users = table.get("users", [])
            if not isinstance(users, list) or not all(
                isinstance(u, str) and u.strip() for u in users
            ):
                self.fail(
                    self.in_table("department", index, "users"),
                    f"department {name}: users must be a list of console user names",
                )
                users = []
            for user in users:
                if user in users_seen:
                    self.fail(
                        self.in_table("department", index, "users"),
                        f"user {user!r} already acts for {users_seen[user]}",
                    )
                users_seen[user] = name
            found[name] = Department(name, tuple(u.strip() for u in users))
        return found

    def read_duties(
        self, tables: object, departments: Mapping[str, Department]
    ) -> dict[tuple[str, str], str]:
        if not isinstance(tables, list) or not tables:
            self.fail(None, "no duties: add [[duty]] tables (category, district, department)")
            return {}
        duties: dict[tuple[str, str], str] = {}
        where: dict[tuple[str, str], int | None] = {}
        for index, table in enumerate(tables):
            for key in table:
                if key not in _DUTY_KEYS:
                    self.fail(
                        self.in_table("duty", index, key),
                        f"duty: unknown key {key!r} (known: {', '.join(_DUTY_KEYS)})",
                    )
            category = table.get("category")
            line = self.in_table("duty", index, "category")
            if not isinstance(category, str) or category not in self.categories:
                known = "、".join(sorted(self.categories))
                self.fail(
                    line,
                    f"duty: category {category!r} is not a category of the taxonomy ({known})"
                    if category is not None
                    else "duty: category is missing",
                )
                category = None
            department = table.get("department")
            line = self.in_table("duty", index, "department")
            if not isinstance(department, str) or department not in departments:
                known = "、".join(departments) or "none"
                self.fail(
                    line,
                    f"duty: department {department!r} is not a [[department]] of this file "
                    f"({known})"
                    if department is not None
                    else "duty: department is missing",
                )
                department = None
            raw = table.get("district", EVERY_DISTRICT)
            line = self.in_table("duty", index, "district")
            names = raw if isinstance(raw, list) else [raw]
            districts: list[str] = []
            for district in names:
                if district == EVERY_DISTRICT or (
                    isinstance(district, str) and district in self.districts
                ):
                    districts.append(district)
                else:
                    known = "、".join(sorted(self.districts))
                    self.fail(
                        line,
                        f"duty: district {district!r} is not a district of the gazetteer "
                        f'({known}) nor "*"',
                    )
            if category is None or department is None:
                continue
            for district in districts:
                key = (category, district)
                if key in duties:
                    self.fail(
                        line,
                        f"duty: {category} in {district} is already given to {duties[key]} "
                        f"(line {where[key]})",
                    )
                    continue
                duties[key] = department
                where[key] = line or line_containing(self.text, category)
        return duties
