"""The district data contract: every column a district may hand us, in one place.

Two views of one contract: the classic two-table format (``SCHOOL_COLUMNS``, ``STUDENT_COLUMNS``,
one target year with optional prior-year columns) and the longitudinal records every other format
is normalised to (``RECORD_KEY_COLUMNS``, ``ATTRIBUTE_COLUMNS``, ``ENGAGEMENT_COLUMNS``; see
docs/architecture.md). Validation, ingestion, the docs tables, the model-input schema and the
synthetic generators all read this module, so the contract cannot drift between them.
"""

from __future__ import annotations

from dataclasses import dataclass

GRADES: tuple[str, ...] = ("9th", "10th", "11th", "12th")
# The classic format's grade order as a district config sees it: "8th" only appears as the prior year
# reconstructed from the prior-score columns of 9th graders.
CLASSIC_GRADES: tuple[str, ...] = ("8th", *GRADES)
SCHOOL_TYPES: tuple[str, ...] = ("District", "Charter")
GENDERS: tuple[str, ...] = ("M", "F")
# Longitudinal records also accept X (non-binary), as many state exports now do.
RECORD_GENDERS: tuple[str, ...] = ("F", "M", "X")
PARENTAL_EDUCATION: tuple[str, ...] = (
    "less_than_high_school",
    "high_school",
    "some_college",
    "bachelors",
    "graduate",
)
SCHOOL_DAYS_PER_YEAR = 180
CLASSIC_PASS_MARK = 70.0  # the classic format's lowest passing score on its 0-100 scale
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


# The programme flags, the same in the classic student table and in the long records.
PROGRAMME_COLUMNS: tuple[Column, ...] = (
    Column(
        "econ_disadvantaged",
        "bool",
        "Economically disadvantaged (free or reduced-price lunch).",
        required=False,
    ),
    Column("english_learner", "bool", "English learner status.", required=False),
    Column("special_education", "bool", "Has an individualised education programme.", required=False),
)

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
    *PROGRAMME_COLUMNS,
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


# ----------------------------------------------------------------------------------------------
# Longitudinal records (long and wide formats): one row per student, subject and school year.
# ----------------------------------------------------------------------------------------------

RECORD_KEY_COLUMNS: tuple[Column, ...] = (
    Column("student_id", "str", "Student identifier; text, leading zeros kept."),
    Column("school_year", "year", "School year: 2023, '2022-2023' or '2022-23' (the year it ends)."),
    Column("subject", "str", "Content area; mapped to a subject by the config's codes (long format)."),
    Column("grade", "grade", "Grade when assessed; one of the config's grade codes."),
    Column("scale_score", "float", "Scale score, within the subject's declared scale (long format)."),
    Column("achievement_level", "category", "Achievement level name.", required=False),
    Column("school_id", "str", "School identifier of that year's record."),
    Column("school_name", "str", "School name.", required=False),
    Column("district", "str", "District (LEA) name; several districts may share a file.", required=False),
    Column(
        "valid_case", "bool", "Whether the record is a valid case; invalid ones are dropped.", required=False
    ),
)

# Known when the school year starts: a growth pair takes them from the target year's record.
ATTRIBUTE_COLUMNS: tuple[Column, ...] = (
    Column("gender", "category", "Gender as recorded.", required=False, allowed=RECORD_GENDERS),
    *PROGRAMME_COLUMNS,
    Column(
        "parental_education",
        "category",
        "Highest education of a parent or guardian.",
        required=False,
        allowed=PARENTAL_EDUCATION,
    ),
    Column("home_internet", "bool", "Has broadband internet at home.", required=False),
    Column(
        "commute_minutes", "float", "One-way commute to school in minutes.", required=False, min=0, max=240
    ),
)

# Measured during the school year: a growth pair takes them from the PRIOR year's record (prior_*).
ENGAGEMENT_COLUMNS: tuple[Column, ...] = (
    Column(
        "days_absent",
        "int",
        "Days absent in that school year (at most the config's school_days).",
        required=False,
        min=0,
    ),
    Column(
        "homework_completion_pct",
        "float",
        "Share of homework handed in that year, percent.",
        required=False,
        min=0,
        max=100,
    ),
    Column(
        "extracurricular_count", "int", "Extracurricular activities that year.", required=False, min=0, max=20
    ),
    Column(
        "platform_logins_per_week",
        "float",
        "Average weekly logins to the learning platform that year.",
        required=False,
        min=0,
        max=100,
    ),
)

RECORD_SCHOOL_COLUMNS: tuple[Column, ...] = (
    Column("school_id", "str", "School identifier, as in the records."),
    Column("school_name", "str", "School name.", required=False),
    Column("type", "category", "Governance type.", required=False, allowed=SCHOOL_TYPES),
    Column(
        "size",
        "int",
        "Enrolment as reported (reports count students from the records).",
        required=False,
        min=0,
    ),
    Column("budget", "float", "Total annual budget in dollars.", required=False, min=0),
    Column("level", "str", "School level (e.g. Elementary, Middle, High).", required=False),
)

FLAG_COLUMNS: tuple[str, ...] = tuple(c.name for c in ATTRIBUTE_COLUMNS if c.kind == "bool")


def score_column(subject: str) -> str:
    """Scale score of a subject in the student-year table."""
    return f"score_{subject}"


def level_column(subject: str) -> str:
    return f"level_{subject}"


def proficient_column(subject: str) -> str:
    return f"proficient_{subject}"


def prior_score_column(subject: str, years_back: int = 1) -> str:
    """The subject's score one (``prior_math_score``) or two (``prior2_math_score``) years back."""
    return f"prior_{subject}_score" if years_back == 1 else f"prior{years_back}_{subject}_score"


def growth_column(subject: str) -> str:
    """Target of the growth model: target-year score minus prior-year score."""
    return f"{subject}_growth"


def prior_engagement_column(name: str) -> str:
    """Engagement of the year before the target year, as a model input (``prior_days_absent``)."""
    return f"prior_{name}"
