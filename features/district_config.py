"""The district config: one small file that says where a district's data is and how its columns and
codes map to the contract (docs/architecture.md has the annotated format).

A config is validated completely before any data is read, and every error names the config file,
the key and what was expected, so "nothing runs on a config that does not validate".
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.contract import (
    ATTRIBUTE_COLUMNS,
    CLASSIC_GRADES,
    CLASSIC_PASS_MARK,
    ENGAGEMENT_COLUMNS,
    RECORD_KEY_COLUMNS,
    SCHOOL_TYPES,
)

Scalar = str | bool | int | float


class ConfigError(ValueError):
    """A district config that cannot be used; each line names the file, the key and the expectation."""

    def __init__(self, file: Path | str, problems: Sequence[tuple[str, str]]):
        self.file = str(file)
        self.problems = [(key, message) for key, message in problems]
        super().__init__("\n".join(f"{self.file}, key '{key}': {message}" for key, message in self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Files(_Strict):
    records: list[str] = Field(default_factory=list, description="Paths or globs of the records files.")
    schools: str | None = Field(None, description="The schools file (optional).")
    students: str | None = Field(None, description="Classic format only: the students table.")


class Columns(_Strict):
    """Contract column -> the column's name in the records files."""

    student_id: str | None = None
    school_year: str | None = None
    subject: str | None = None
    grade: str | None = None
    scale_score: str | None = None
    achievement_level: str | None = None
    school_id: str | None = None
    school_name: str | None = None
    district: str | None = None
    gender: str | None = None
    econ_disadvantaged: str | None = None
    english_learner: str | None = None
    special_education: str | None = None
    parental_education: str | None = None
    home_internet: str | None = None
    commute_minutes: str | None = None
    days_absent: str | None = None
    homework_completion_pct: str | None = None
    extracurricular_count: str | None = None
    platform_logins_per_week: str | None = None
    valid_case: str | None = None

    def mapped(self) -> dict[str, str]:
        """Contract name -> file column, for the columns this district has."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SchoolColumns(_Strict):
    school_id: str | None = None
    school_name: str | None = None
    type: str | None = None
    size: str | None = None
    budget: str | None = None
    level: str | None = None

    def mapped(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SubjectSpec(_Strict):
    """One content area: how to find it in the files, its score scale and its achievement levels."""

    codes: list[str] = Field(default_factory=list, description="Long format: subject-column values.")
    score_column: str | None = Field(None, description="Wide format: the subject's score column.")
    level_column: str | None = Field(None, description="Wide format: the subject's level column.")
    label: str | None = None
    scale: tuple[float, float] | None = None
    scale_by_grade: dict[str, tuple[float, float]] = Field(default_factory=dict)
    vertical: bool = True
    levels: list[str] = Field(default_factory=list)
    proficient: str | None = None
    cuts: dict[str, list[float]] = Field(default_factory=dict)


class ReportSettings(_Strict):
    passing_word: str = "Proficient"
    min_group_size: int = Field(10, ge=1)
    spending_bins: list[float] = Field(default_factory=lambda: [0, 585, 630, 645, 680])
    spending_labels: list[str] = Field(default_factory=lambda: ["<$585", "$585-630", "$630-645", "$645-680"])
    size_bins: list[float] = Field(default_factory=lambda: [0, 1000, 2000, 5000])
    size_labels: list[str] = Field(
        default_factory=lambda: ["Small (<1000)", "Medium (1000-2000)", "Large (2000-5000)"]
    )


class FeatureSettings(_Strict):
    attributes_from: Literal["target", "prior"] = Field(
        "target", description="Which year's record supplies a student's demographics for a growth pair."
    )


VALUE_MAP_COLUMNS = (
    "gender",
    "grade",
    "achievement_level",
    "parental_education",
    "type",
    "level",
    "valid_case",
    "econ_disadvantaged",
    "english_learner",
    "special_education",
    "home_internet",
)


class DistrictConfig(_Strict):
    """A validated district config. ``path`` is the file it came from (for messages and relative paths)."""

    name: str = "District"
    format: Literal["long", "wide", "classic"] = "long"
    files: Files = Field(default_factory=Files)
    columns: Columns = Field(default_factory=Columns)
    school_columns: SchoolColumns = Field(default_factory=SchoolColumns)
    values: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    grades: list[str] = Field(default_factory=list)
    duplicates: Literal["error", "highest_score", "last"] = "error"
    skip_subject_codes: list[str] = Field(default_factory=list)
    subjects: dict[str, SubjectSpec] = Field(default_factory=dict)
    report: ReportSettings = Field(default_factory=ReportSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    school_days: int = Field(180, ge=1, le=366)
    path: Path = Field(Path("district.toml"), exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> DistrictConfig:
        problems = consistency_problems(self)
        if problems:
            raise ValueError(problems)
        return self

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.folder / path


def consistency_problems(config: DistrictConfig) -> list[tuple[str, str]]:
    """Rules spanning keys; each problem is (key, what was expected)."""
    problems: list[tuple[str, str]] = []
    if config.format == "classic":
        for key in ("schools", "students"):
            if not getattr(config.files, key):
                problems.append((f"files.{key}", "the classic format needs the schools and students tables"))
        return problems
    if not config.files.records:
        problems.append(("files.records", "at least one records file (a path or a glob)"))
    needed = ["student_id", "grade"] + (["subject", "scale_score"] if config.format == "long" else [])
    for key in needed:
        if getattr(config.columns, key) is None:
            problems.append((f"columns.{key}", f"the {config.format} format needs this column mapped"))
    if config.columns.school_id is None and config.columns.school_name is None:
        problems.append(("columns.school_id", "a school column (school_id or school_name)"))
    if not config.grades:
        problems.append(("grades", 'the grade codes of your files, in order (e.g. ["03", "04"])'))
    elif len(set(config.grades)) != len(config.grades):
        problems.append(("grades", "each grade code once"))
    if not config.subjects:
        problems.append(("subjects", "at least one subject, e.g. [subjects.math] with its codes and scale"))
    if config.files.schools and config.school_columns.school_id is None:
        problems.append(("school_columns.school_id", "the schools file's school id column"))
    for column in config.values:
        if column not in VALUE_MAP_COLUMNS:
            problems.append((f"values.{column}", f"a value map for one of {', '.join(VALUE_MAP_COLUMNS)}"))
    for column, mapping in config.values.items():
        for code in mapping:
            if code in DistrictConfig.model_fields and code != "path":
                problems.append(
                    (
                        f"values.{column}.{code}",
                        (
                            f"'{code}' is a top-level key: write it before the first [table] header "
                            "(TOML puts every key after a [header] into that table)"
                        ),
                    )
                )
    type_map = config.values.get("type", {})
    for code, value in type_map.items():
        if code in DistrictConfig.model_fields:
            continue
        if value not in SCHOOL_TYPES:
            problems.append((f"values.type.{code}", f"one of {', '.join(SCHOOL_TYPES)}; found {value!r}"))
    codes_seen: dict[str, str] = {}
    for name, spec in config.subjects.items():
        problems.extend(subject_problems(config, name, spec, codes_seen))
    return problems


def subject_problems(
    config: DistrictConfig, name: str, spec: SubjectSpec, codes_seen: dict[str, str]
) -> list[tuple[str, str]]:
    """Scale, levels and cuts of one subject must be complete and ordered for every grade."""
    key = f"subjects.{name}"
    problems: list[tuple[str, str]] = []
    if not name.isidentifier() or not name.islower():
        problems.append((key, "a lower-case subject name of letters, digits and underscores (e.g. math)"))
    if config.format == "long":
        if not spec.codes:
            problems.append((f"{key}.codes", "the values of the subject column that mean this subject"))
        for code in spec.codes:
            if code in codes_seen:
                problems.append(
                    (f"{key}.codes", f"code {code!r} is already used by subject {codes_seen[code]}")
                )
            codes_seen[code] = name
    if config.format == "wide" and not spec.score_column:
        problems.append((f"{key}.score_column", "the wide format needs each subject's score column"))
    if spec.scale is None and not spec.scale_by_grade:
        problems.append((f"{key}.scale", "the lowest and highest obtainable score, e.g. [150, 950]"))
    for label, bounds in [("scale", spec.scale)] + [
        (f"scale_by_grade.{g}", b) for g, b in spec.scale_by_grade.items()
    ]:
        if bounds is not None and not bounds[0] < bounds[1]:
            problems.append(
                (f"{key}.{label}", f"[lowest, highest] with lowest < highest; found {list(bounds)}")
            )
    if spec.scale is None and spec.scale_by_grade:
        missing = [g for g in config.grades if g not in spec.scale_by_grade]
        if missing:
            problems.append(
                (f"{key}.scale_by_grade", f"a scale for every grade; missing {', '.join(missing)}")
            )
    for grade in spec.scale_by_grade:
        if grade not in config.grades:
            problems.append((f"{key}.scale_by_grade.{grade}", f"a grade listed in 'grades'; found {grade!r}"))
    if spec.proficient is not None and spec.proficient not in spec.levels:
        problems.append((f"{key}.proficient", f"one of the levels {spec.levels}; found {spec.proficient!r}"))
    if spec.levels and spec.proficient is None:
        problems.append((f"{key}.proficient", "the lowest level counted as proficient"))
    if spec.cuts and len(spec.levels) < 2:
        problems.append((f"{key}.levels", "the level names (at least two) that the cut scores separate"))
    for grade, cuts in spec.cuts.items():
        ckey = f"{key}.cuts.{grade}"
        if grade not in config.grades:
            problems.append((ckey, f"a grade listed in 'grades'; found {grade!r}"))
            continue
        if len(spec.levels) >= 2 and len(cuts) != len(spec.levels) - 1:
            problems.append(
                (
                    ckey,
                    f"{len(spec.levels) - 1} cut scores (one per level above "
                    f"'{spec.levels[0]}'); found {len(cuts)}",
                )
            )
        if any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
            problems.append((ckey, f"increasing cut scores; found {cuts}"))
    if spec.cuts:
        missing = [g for g in config.grades if g not in spec.cuts]
        if missing:
            problems.append((f"{key}.cuts", f"cut scores for every grade; missing {', '.join(missing)}"))
    return problems


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


UNION_TAGS = frozenset({"str", "bool", "int", "float"})
TOP_LEVEL_KEYS = frozenset(DistrictConfig.model_fields) - {"path"}


def _pydantic_problems(err: ValidationError, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Pydantic errors as (key, expectation): one line per key, allowed keys for unknown ones, and a
    hint when a top-level key landed inside a table (the usual TOML mistake)."""
    problems: dict[str, str] = {}
    for item in err.errors(include_url=False):
        if item["type"] == "value_error" and isinstance(item.get("ctx", {}).get("error"), ValueError):
            inner = item["ctx"]["error"].args[0]
            if isinstance(inner, list):
                problems.update(dict(inner))
                continue
        loc = tuple(item["loc"])
        union = bool(loc) and str(loc[-1]) in UNION_TAGS
        if union:
            loc = loc[:-1]
        key = _location(loc)
        if key in problems:
            continue
        found = item.get("input")
        if len(loc) > 1 and str(loc[-1]) in TOP_LEVEL_KEYS:
            problems[key] = (
                f"'{loc[-1]}' is a top-level key: write it before the first [table] header "
                "(TOML puts every key after a [header] into that table)"
            )
        elif item["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            problems[key] = "an unknown key" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif union:
            problems[key] = f"a text, true/false or a number; found {found!r}"
        elif item["type"] == "literal_error":
            problems[key] = f"{item['msg'].removeprefix('Input should be ')}; found {found!r}"
        else:
            problems[key] = f"{item['msg'].removeprefix('Input should be ')}; found {found!r}"
    return list(problems.items())


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    """The keys a table of the config accepts, for 'unknown key' messages."""
    model: type[BaseModel] = DistrictConfig
    parts = [str(p) for p in parent]
    while parts:
        part = parts.pop(0)
        field = model.model_fields.get(part)
        if field is None:
            return []
        if part == "subjects":
            if not parts:
                return []  # subject names are the district's own
            parts.pop(0)
            model = SubjectSpec
            continue
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(k for k in model.model_fields if k != "path")


def parse_file(path: Path) -> dict[str, Any]:
    """TOML (or YAML by extension) to a dict; syntax errors name the file and the line."""
    if not path.exists():
        raise ConfigError(path, [("(file)", "an existing config file; it was not found")])
    text = path.read_text(encoding="utf-8-sig")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(path, [("(syntax)", f"valid {path.suffix.lstrip('.').upper()}: {err}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(path, [("(top level)", "a table of keys")])
    return data


def load_config(path: Path | str) -> DistrictConfig:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    data = parse_file(path)
    return config_from_dict(data, path)


def config_from_dict(data: Mapping[str, Any], path: Path | str = "district.toml") -> DistrictConfig:
    try:
        return DistrictConfig.model_validate({**data, "path": Path(path)})
    except ValidationError as err:
        raise ConfigError(path, _pydantic_problems(err, data)) from None


def classic_config(
    schools: Path | str, students: Path | str, pass_mark: float = CLASSIC_PASS_MARK
) -> DistrictConfig:
    """The classic two-table format as a config: math and reading on 0-100, passing at ``pass_mark``."""
    schools, students = Path(schools), Path(students)
    grades = list(CLASSIC_GRADES)
    subject = {
        "scale": (0.0, 100.0),
        "vertical": False,
        "levels": ["Not passing", "Passing"],
        "proficient": "Passing",
        "cuts": {g: [pass_mark] for g in grades},
    }
    return config_from_dict(
        {
            "name": "District",
            "format": "classic",
            "files": {"schools": str(schools.resolve()), "students": str(students.resolve())},
            "grades": grades,
            "subjects": {"math": {**subject, "label": "Math"}, "reading": {**subject, "label": "Reading"}},
            "report": {"passing_word": "Passing"},
        },
        path=students.parent / "(classic files)",
    )


# Contract names a config may map; kept here so messages can list them.
MAPPABLE = (*RECORD_KEY_COLUMNS, *ATTRIBUTE_COLUMNS, *ENGAGEMENT_COLUMNS)
