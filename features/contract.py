"""The district data contract: every column a district may hand us, in one place.

The validation schema (features/validation.py), the docs table (docs/data.md) and the
synthetic generator all read this module, so the contract cannot drift between them.
"""

from __future__ import annotations

from dataclasses import dataclass

GRADES: tuple[str, ...] = ("9th", "10th", "11th", "12th")
SCHOOL_TYPES: tuple[str, ...] = ("District", "Charter")
GENDERS: tuple[str, ...] = ("M", "F")
PARENTAL_EDUCATION: tuple[str, ...] = (
    "less_than_high_school",
    "high_school",
    "some_college",
    "bachelors",
    "graduate",
)
SCHOOL_DAYS_PER_YEAR = 180
CHRONIC_ABSENCE_DAYS = SCHOOL_DAYS_PER_YEAR // 10  # more than 10% of days missed


@dataclass(frozen=True)
class Column:
    """One column of the contract: its kind, its allowed values and what it means."""

    name: str
    kind: str  # "int", "float", "str", "bool", "category"
    meaning: str
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None

    @property
    def allowed_text(self) -> str:
        if self.allowed:
            return ", ".join(self.allowed)
        if self.min is not None and self.max is not None:
            return f"{self.min:g} to {self.max:g}"
        if self.min is not None:
            return f"greater than {self.min:g}" if self.min == 0 else f">= {self.min:g}"
        if self.kind == "bool":
            return "0/1, true/false, yes/no"
        return "any"


SCHOOL_COLUMNS: tuple[Column, ...] = (
    Column("school_name", "str", "Unique school name; students refer to it."),
    Column("type", "category", "Governance type of the school.", allowed=SCHOOL_TYPES),
    Column(
        "size", "int", "Enrolment as reported by the district (checked against the student table).", min=0
    ),
    Column("budget", "float", "Total annual school budget in dollars.", min=0),
    Column("school_id", "int", "Optional district school identifier (`School ID`).", required=False),
)

STUDENT_COLUMNS: tuple[Column, ...] = (
    Column("student_id", "int", "Unique student identifier (`Student ID`)."),
    Column("student_name", "str", "Student name; used by nothing but kept for the district's own records."),
    Column("gender", "category", "Gender as recorded by the district.", allowed=GENDERS),
    Column("grade", "category", "Grade in the target school year.", allowed=GRADES),
    Column("school_name", "str", "School the student attends; must appear in the schools table."),
    Column("reading_score", "float", "Reading score at the end of the target year.", min=0, max=100),
    Column("math_score", "float", "Math score at the end of the target year.", min=0, max=100),
    # Optional columns used by the growth model; all known before the target year starts.
    Column(
        "prior_math_score",
        "float",
        "Math score at the end of the previous year.",
        required=False,
        min=0,
        max=100,
    ),
    Column(
        "prior_reading_score",
        "float",
        "Reading score at the end of the previous year.",
        required=False,
        min=0,
        max=100,
    ),
    Column(
        "econ_disadvantaged",
        "bool",
        "Economically disadvantaged (free or reduced-price lunch).",
        required=False,
    ),
    Column("english_learner", "bool", "English learner status.", required=False),
    Column("special_education", "bool", "Has an individualised education programme.", required=False),
    Column(
        "prior_days_absent",
        "int",
        "Days absent in the previous school year (of 180).",
        required=False,
        min=0,
        max=SCHOOL_DAYS_PER_YEAR,
    ),
    Column(
        "homework_completion_pct",
        "float",
        "Share of homework handed in last year, percent.",
        required=False,
        min=0,
        max=100,
    ),
    Column(
        "extracurricular_count",
        "int",
        "Extracurricular activities taken part in last year.",
        required=False,
        min=0,
        max=10,
    ),
    Column(
        "platform_logins_per_week",
        "float",
        "Average weekly logins to the learning platform last year.",
        required=False,
        min=0,
        max=100,
    ),
    Column("home_internet", "bool", "Has broadband internet at home.", required=False),
    Column(
        "commute_minutes", "float", "One-way commute to school in minutes.", required=False, min=0, max=240
    ),
    Column(
        "parental_education",
        "category",
        "Highest education of a parent or guardian.",
        required=False,
        allowed=PARENTAL_EDUCATION,
    ),
)

TARGETS: dict[str, tuple[str, str]] = {
    "math": ("math_score", "prior_math_score"),
    "reading": ("reading_score", "prior_reading_score"),
}


def target_column(target: str) -> str:
    """Name of the growth column for a target, e.g. ``math_growth``."""
    return f"{target}_growth"


def columns_markdown(columns: tuple[Column, ...]) -> str:
    """The contract as a Markdown table, for docs/data.md."""
    lines = ["| column | type | required | allowed | meaning |", "|---|---|---|---|---|"]
    for col in columns:
        lines.append(
            f"| `{col.name}` | {col.kind} | {'yes' if col.required else 'no'} | {col.allowed_text} "
            f"| {col.meaning} |"
        )
    return "\n".join(lines)
