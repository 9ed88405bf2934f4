"""The growth report (reports/growth_report.py) on a small synthetic long district.

The district: 2,500 students a year, 3 school years, grades 03-08, four schools, truth files. In its
last year five students move to "Tiny Test Academy" (a school of five: everything about it must be
suppressed) and four students have no recorded English-learner status (a group of four). Every
record carries a student name column that ingestion ignores and the page must never show.

The SGPs and value-added are computed once (``computed``); the page is written twice, without
evaluation files (no champion) and with hand-made ones in the format ``growth train`` writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.synthetic import FEMALE_FIRST_NAMES, LAST_NAMES, MALE_FIRST_NAMES
from pipelines.synthetic_long import generate_long_district
from reports import growth_report as g
from training.data import Source, load_data
from training.fairness import alerts, audit_markdown

pytestmark = pytest.mark.slow  # builds whole growth reports

TINY = ("9999", "Tiny Test Academy")
MOVERS = 5
UNRECORDED = 4
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def student_name(index: int) -> str:
    first = (FEMALE_FIRST_NAMES + MALE_FIRST_NAMES)[index % 100]
    return f"{first} {LAST_NAMES[(index * 7) % len(LAST_NAMES)]}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = generate_long_district(n_students=2500, years=3, grades=("03", "04", "05", "06", "07", "08"), seed=5)
    out = tmp_path_factory.mktemp("growth") / "district"
    (out / "truth").mkdir(parents=True)
    (out / "district.toml").write_text(d.config_text)
    schools = d.schools.copy()
    schools.loc[len(schools)] = [int(TINY[0]), TINY[1], "Traditional", "Elementary", MOVERS, 5000]
    schools.to_csv(out / "schools.csv", index=False)
    years = sorted(d.records)
    before = set(d.records[years[-2]]["StudentIdentifier"].astype(str))
    for year, frame in d.records.items():
        frame = frame.astype({c: object for c in ("SchoolCode", "SchoolName", "EnglishLearnerStatus")})
        ids = frame["StudentIdentifier"].astype(str)
        codes = {s: i for i, s in enumerate(sorted(set(ids)))}
        frame.insert(5, "StudentName", [student_name(codes[s]) for s in ids])
        if year == years[-1]:
            returning = [s for s in dict.fromkeys(ids) if s in before]
            movers, unrecorded = returning[:MOVERS], returning[MOVERS : MOVERS + UNRECORDED]
            frame.loc[ids.isin(movers), "SchoolCode"] = int(TINY[0])
            frame.loc[ids.isin(movers), "SchoolName"] = TINY[1]
            frame.loc[ids.isin(unrecorded), "EnglishLearnerStatus"] = None
        frame.to_csv(out / d.record_file(year), index=False)
    d.school_effects.to_csv(out / "truth" / "school_effects.csv", index=False)
    return out


@pytest.fixture(scope="module")
def data(folder: Path):
    return load_data(Source(config=folder / "district.toml"))


@pytest.fixture(scope="module")
def computed(data) -> g.GrowthComputed:
    return g.compute_growth(data)


def evaluation_files(root: Path, fingerprint: str) -> Path:
    """Math's evaluation folder as ``growth train`` writes it; reading has none (no champion)."""
    folder = root / "math"
    folder.mkdir(parents=True)
    card = {
        "subject": "math",
        "family": "lgbm",
        "members": [],
        "split": "leave-future-out: trained on year pairs before 2024, tested on the pairs of 2024 "
        "(1,890 students)",
        "years": [2022, 2023, 2024],
        "n_train": 1200,
        "n_val": 300,
        "n_cal": 290,
        "n_test": 1890,
        "metrics": {
            "test_mae": 12.1,
            "test_rmse": 15.4,
            "test_r2": 0.61,
            "val_rmse": 15.2,
            "rmse_reduction_vs_baseline_pct": 21.5,
            "test_interval_coverage": 0.897,
        },
        "gate": "test RMSE 15.4000 vs required <= 18.0000 (8% below the linear baseline's 19.6000)",
        "gate_passed": True,
        "data_fingerprint": fingerprint,
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    pd.DataFrame(
        {
            "model": ["baseline_linear", "baseline_naive", "lgbm", "champion (lgbm, refit)"],
            "val_rmse": [19.5, 21.0, 15.2, 15.2],
            "test_mae": [15.9, 17.0, 12.2, 12.1],
            "test_rmse": [19.6, 21.3, 15.5, 15.4],
            "test_r2": [0.35, 0.2, 0.6, 0.61],
            "rmse_reduction_vs_baseline_pct": [np.nan, np.nan, 20.9, 21.5],
        }
    ).to_csv(folder / "families.csv", index=False)
    pd.DataFrame(
        {
            "case": [
                "all fields sent",
                "3 optional fields removed",
                "all optional fields removed",
                "school unknown to the model",
            ],
            "n": [1890] * 4,
            "coverage_90": [0.897, 0.9, 0.893, 0.881],
            "mean_width": [50.1, 55.2, 70.3, 90.4],
            "rmse": [15.4, 16.8, 21.9, 30.2],
        }
    ).to_csv(folder / "coverage.csv", index=False)
    groups = pd.DataFrame(
        {
            "group": ["all", "english_learner", "english_learner", "english_learner", "gender", "gender"],
            "value": ["all", "no", "yes", "missing", "F", "M"],
            "n": [1890, 1600, 284, 6, 940, 950],
        }
    )
    growth = groups.assign(
        bias=[0.1, 0.05, 0.4, 7.777, 0.2, -0.1],
        mae=12.0,
        rmse=15.4,
        coverage_90=[0.897, 0.9, 0.88, 0.5, 0.9, 0.89],
    )
    growth.to_csv(folder / "fairness_growth.csv", index=False)
    support = groups.assign(
        needs_support_rate=[0.4, 0.38, 0.55, 0.5, 0.41, 0.39],
        flag_rate=[0.1, 0.08, 0.2, 0.2, 0.1, 0.1],
        false_positive_rate=[0.01, 0.01, 0.02, 0.0, 0.01, 0.01],
        false_negative_rate=[0.5, 0.45, 0.7, 0.6, 0.5, 0.5],
        precision_flagged=[0.95, 0.95, 0.96, 1.0, 0.95, 0.95],
        mean_predicted=[0.41, 0.39, 0.56, 0.5, 0.42, 0.4],
        observed=[0.4, 0.38, 0.55, 0.5, 0.41, 0.39],
    )
    support.to_csv(folder / "fairness_support.csv", index=False)
    (folder / "fairness.md").write_text(audit_markdown("math", growth, support, alerts(support)))
    pd.Series({"prior_math_score": 30.0, "school_id": 9.0, "prior_days_absent": 3.0, "grade": 1.0}).rename(
        "rmse_increase"
    ).to_csv(folder / "importance.csv")
    days = np.array([0.0, 2, 4, 6, 10, 15, 20, 30])
    scores = np.linspace(350, 650, 8)
    pd.concat(
        [
            pd.DataFrame(
                {"value": scores, "mean_prediction": 60 - 0.1 * (scores - 350), "column": "prior_math_score"}
            ),
            pd.DataFrame({"value": days, "mean_prediction": 40 - 0.3 * days, "column": "prior_days_absent"}),
        ]
    ).to_csv(folder / "partial_dependence.csv", index=False)
    pd.DataFrame(
        {
            "model": [
                "baseline_rule",
                "baseline_logistic",
                "logistic (calibrated)",
                "champion (logistic, refit, calibrated)",
            ],
            "test_roc_auc": [0.88, 0.89, 0.94, 0.94],
            "test_pr_auc": [0.86, 0.87, 0.93, 0.93],
            "test_brier": [0.13, 0.13, 0.09, 0.09],
            "test_precision_at_10pct": [0.98, 0.98, 0.99, 0.99],
            "test_recall_at_10pct": [0.22, 0.22, 0.23, 0.23],
        }
    ).to_csv(folder / "support.csv", index=False)
    (folder / "support_card.json").write_text(
        json.dumps(
            {
                "subject": "math",
                "family": "logistic",
                "gate": "PR AUC 0.93 (needs >= 0.88)",
                "gate_passed": True,
                "metrics": {},
                "baselines": {},
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def plain(computed, data, tmp_path_factory) -> Path:
    """The page without evaluation files, written into a folder that already holds a district report."""
    out = tmp_path_factory.mktemp("plain") / "report"
    out.mkdir()
    (out / "report.html").write_text("<html>district report</html>")
    g.write_growth_report(computed, data, out, evaluation_dir=out.parent / "no-evaluation")
    return out


@pytest.fixture(scope="module")
def with_model(computed, data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    out = root / "report"
    g.write_growth_report(
        computed, data, out, evaluation_dir=evaluation_files(root / "evaluation", data.fingerprint)
    )
    return out


def page(out: Path) -> str:
    return (out / g.HTML_NAME).read_text()


def text_of(html: str) -> str:
    """The page without its embedded images."""
    return DATA_URI.sub("", html)


def row_of(html: str, first_cell: str) -> str:
    """The table row whose first cell is ``first_cell``."""
    match = re.search(r"<tr>\s*<td[^>]*>" + re.escape(first_cell) + r"</td>(.*?)</tr>", html, re.S)
    assert match, f"no row for {first_cell}"
    return match.group(1)


# --- without a champion ---------------------------------------------------------------------------


def test_page_without_evaluation_files_says_no_champion(plain: Path) -> None:
    html = page(plain)
    for label in ("Math", "Reading"):
        assert html.count(f"No champion trained for {label} yet: run growth tune and growth train.") == 2
    assert "Validation scheme" not in html
    assert "Limits: read these before acting on the figures" in html
    assert len(DATA_URI.findall(html)) >= 5  # growth/VA charts per subject and the subgroup chart, embedded
    assert "<link" not in html and 'src="http' not in html  # self-contained


def test_district_report_files_are_kept_and_nothing_partial_is_left(plain: Path) -> None:
    assert (plain / "report.html").read_text() == "<html>district report</html>"
    names = {p.name for p in plain.iterdir()}
    assert {
        "growth.html",
        "sgp_by_school.csv",
        "sgp_by_group.csv",
        "value_added_math.csv",
        "value_added_reading.csv",
        "growth_metrics.json",
    } <= names
    assert not [p for p in plain.parent.iterdir() if p.name.endswith(".partial")]


def test_a_failing_step_leaves_the_folder_as_it_was(
    computed, data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "sgp_by_school.csv").write_text("previous\n")

    def broken(*args, **kwargs):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(g, "achievement_section", broken)
    with pytest.raises(RuntimeError, match="chart failed"):
        g.write_growth_report(computed, data, out, evaluation_dir=tmp_path / "none")
    assert (out / "sgp_by_school.csv").read_text() == "previous\n"
    assert not (out / "growth.html").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


# --- privacy and suppression ----------------------------------------------------------------------


def test_no_student_id_or_name_anywhere(plain: Path, with_model: Path, data, folder: Path) -> None:
    ids = set(data.district.students["student_id"].astype(str))
    names = set()
    for path in folder.glob("assessments_*.csv"):
        names |= set(pd.read_csv(path, usecols=["StudentName"])["StudentName"])
    assert len(ids) > 2000 and len(names) > 100
    for out in (plain, with_model):
        files = [text_of(page(out))] + [p.read_text() for p in out.glob("*.csv")]
        for text in files:
            words = set(re.findall(r"[0-9]{5,}", text))  # every long number on the page or in a CSV
            assert not words & ids
            assert not [n for n in names if n in text]


def test_tiny_school_is_suppressed_in_csvs_and_page(plain: Path, computed) -> None:
    by_school = pd.read_csv(plain / "sgp_by_school.csv", dtype=str)
    tiny = by_school[by_school["school_name"] == TINY[1]]
    assert len(tiny) == 2  # one row per subject, figures suppressed
    assert (tiny[["students_with_sgp", "median_sgp", "lower_90", "upper_90"]] == "suppressed").all().all()
    shown = by_school[by_school["median_sgp"] != "suppressed"]
    assert len(shown) == 8 and (shown["students_with_sgp"].astype(int) >= 10).all()
    va = pd.read_csv(plain / "value_added_math.csv", dtype=str)
    row = va[va["school_name"] == TINY[1]].iloc[0]
    assert row["n"] == "suppressed" and row["estimate"] == "suppressed" and row["low_b"] == "suppressed"
    assert (va.loc[va["school_name"] != TINY[1], "n"].astype(int) >= 10).all()
    cells = row_of(page(plain), TINY[1])  # the value-added table keeps the school, with —ˢ everywhere
    assert cells.count('class="num sup"') == 11 and not re.search(r"\d", re.sub(r"<[^>]+>", "", cells))


def test_small_student_group_is_suppressed(plain: Path) -> None:
    groups = pd.read_csv(plain / "sgp_by_group.csv", dtype=str)
    missing = groups[(groups["group"] == "english_learner") & (groups["value"] == "missing")]
    assert len(missing) == 2 and (missing["median_sgp"] == "suppressed").all()
    assert (missing["students_with_sgp"] == "suppressed").all()
    shown = groups[groups["median_sgp"] != "suppressed"]
    assert (shown["students_with_sgp"].astype(int) >= 10).all()
    cells = row_of(page(plain), "English learner")  # the first English-learner row: "yes"
    assert "sup" not in cells
    html = page(plain)
    unrecorded = re.search(r"<td>English learner</td><td>not recorded</td>(.*?)</tr>", html, re.S)
    assert unrecorded and unrecorded.group(1).count("<sup>s</sup>") == 6  # 3 figures x 2 subjects


# --- value-added ----------------------------------------------------------------------------------


def test_value_added_table_is_sortable_with_intervals_and_bands(plain: Path, computed) -> None:
    html = page(plain)
    assert 'document.querySelectorAll("table.sortable")' in html
    table = re.search(r'<table class="sortable" id="va-math">(.*?)</table>', html, re.S)
    assert table
    body = table.group(1)
    for header in ("Estimate (points)", "90% interval", "Reliability", "Growth index", "Band", "Students"):
        assert f">{header}</th>" in body
    assert body.count('data-type="num"') == 8
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1], re.S)
    schools = computed.subjects["math"].va.table
    assert len(rows) == len(schools) == 5
    for row in rows:
        assert row.count("data-sort=") == 12
    shown = [r for r in rows if TINY[1] not in r]
    assert all(re.search(r">[+-]\d+\.\d to [+-]\d+\.\d<", r) for r in shown)
    bands = re.findall(r'class="band-([a-z-]+)"', body)
    assert bands and set(bands) <= {"well-above", "above", "meets", "below", "well-below"}
    estimates = [
        float(re.search(r'data-sort="([^"]+)" class="num"', r.split("</td>", 2)[2]).group(1)) for r in shown
    ]
    assert estimates == sorted(estimates, reverse=True)  # first shown by estimate, highest first
    assert "What each view includes and excludes".lower() in html.lower()
    assert "peers" in html and "intake" in html


def test_truth_box_and_growth_metrics(plain: Path, computed) -> None:
    html = page(plain)
    assert "Checked against the truth (synthetic district)" in html
    metrics = g.growth_mlflow_metrics(plain)
    for subject in ("math", "reading"):
        assert 40 <= metrics[f"median_sgp_{subject}"] <= 60
        assert 0.5 < metrics[f"va_corr_true_effect_{subject}"] <= 1
        assert 0 <= metrics[f"va_coverage_{subject}"] <= 1
        assert metrics[f"va_schools_{subject}"] == 4  # the tiny school is suppressed
    assert g.growth_mlflow_metrics(plain.parent / "elsewhere") == {}


# --- with a champion ------------------------------------------------------------------------------


def test_model_card_states_validation_coverage_and_fairness(with_model: Path) -> None:
    html = page(with_model)
    assert "Validation scheme: leave-future-out: trained on year pairs before 2024" in html
    for case in (
        "all fields sent",
        "3 optional fields removed",
        "all optional fields removed",
        "school unknown to the model",
    ):
        assert f"<td>{case}</td>" in html
    assert "89.7%" in html  # coverage with every field sent
    assert "With the top 10% of students flagged, 70% of English learner = yes students" in html
    assert "gradient-boosted trees (LightGBM)" in html
    assert html.count("No champion trained for Reading yet") == 2
    assert "No champion trained for Math" not in html
    six = re.findall(r"<td>English learner</td><td>not recorded</td>(.*?)</tr>", html, re.S)
    assert len(six) == 3  # the subgroup table and both fairness tables: the group of six is suppressed
    assert all("<sup>s</sup>" in r and not re.search(r"\d", re.sub(r"<[^>]+>", "", r)) for r in six)
    assert "+7.78" not in html
    assert re.search(
        r"Students absent \d+ days last year are predicted to grow \d+\.\d points less than "
        r"students absent \d+ days last year, other things equal in the model; an association, "
        r"not a cause\.",
        html,
    )


def test_wording(plain: Path, with_model: Path) -> None:
    for out in (plain, with_model):
        text = text_of(page(out)).lower()
        assert "needs support" in text or out == plain
        assert "at risk" not in text and "at-risk" not in text and "failing" not in text


def test_build_growth_report_for_an_earlier_year(data, tmp_path: Path) -> None:
    path = g.build_growth_report(data, tmp_path / "out", year=2023, evaluation_dir=tmp_path / "none")
    assert path == (tmp_path / "out" / "growth.html").resolve()
    assert "target school year 2022-23" in path.read_text()
    assert json.loads((tmp_path / "out" / g.METRICS_NAME).read_text())["year"] == 2023
    with pytest.raises(ValueError, match="target years with pairs: 2023, 2024"):
        g.build_growth_report(data, tmp_path / "out", year=2022)


# --- pieces ---------------------------------------------------------------------------------------


def test_curve_sentence() -> None:
    assert g.curve_sentence("prior_days_absent", 2, 20, -5.1, {"math": "Math"}) == (
        "Students absent 20 days last year are predicted to grow 5.1 points less than students absent 2 days "
        "last year, other things equal in the model; an association, not a cause."
    )
    assert g.curve_sentence("prior_math_score", 400, 600, 3.25, {"math": "Math"}).startswith(
        "Students who scored 600 in Math last year are predicted to grow 3.2 points more than students who "
        "scored 400 in Math last year"
    )


def test_curves_use_the_years_10th_and_90th_percentiles() -> None:
    partial = pd.DataFrame(
        {"value": [0.0, 10, 20, 40], "mean_prediction": [30.0, 28, 26, 22], "column": "prior_days_absent"}
    )
    days = np.arange(0, 101, dtype=float) / 2.5  # 10th percentile 4, 90th 36
    (curve,) = g.build_curves(partial, {"prior_days_absent": days}, {})
    assert (curve.low, curve.high) == (4.0, 36.0)
    assert curve.difference == pytest.approx(22.8 - 29.2)
    assert "Students absent 36 days last year are predicted to grow 6.4 points less" in curve.sentence


def test_fairness_sentences_are_read_from_fairness_md() -> None:
    table = pd.DataFrame(
        {"group": ["all", "gender"], "value": ["all", "F"], "n": [100, 50], "false_negative_rate": [0.2, 0.4]}
    )
    growth = pd.DataFrame({"group": ["all"], "value": ["all"], "n": [100], "bias": [0.0]})
    flagged = audit_markdown("math", growth, table, alerts(table))
    assert g.fairness_sentences(flagged) == alerts(table) and len(alerts(table)) == 1
    calm = audit_markdown("math", growth, table.assign(false_negative_rate=0.2), [])
    assert g.fairness_sentences(calm) == [
        "No group's false-negative rate exceeds 1.25 times the overall rate."
    ]


def test_many_schools_chart_names_only_the_extremes_without_overlap() -> None:
    rng = np.random.default_rng(0)
    n = 400
    points = pd.DataFrame(
        {
            "label": [f"School {i:03d}" for i in range(n)],
            "x": rng.uniform(10, 90, n),
            "y": rng.normal(50, 8, n),
            "n": rng.integers(50, 900, n),
            "group": "Elementary",
        }
    )
    x, y = points["x"].to_numpy(), points["y"].to_numpy()
    order = g.extremes(x, y, (50, 50))
    assert sorted(order) == list(range(n)) and order[:2] == [int(np.argmax(y)), int(np.argmin(y))]
    top_left = [i for i in range(n) if x[i] < 50 <= y[i]]  # low achievement, high growth
    distance = ((x - 50) / x.std()) ** 2 + ((y - 50) / y.std()) ** 2
    assert max(top_left, key=lambda i: distance[i]) in order[:6]
    png = g.quadrant_chart(
        points,
        x_ref=50,
        y_ref=50,
        title="t",
        xlabel="x",
        ylabel="y",
        corners=("a", "b", "c", "d"),
        colour_title="School level",
        size_word="students",
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(x, y)
    named = g.label_points(ax, x, y, points["label"].tolist(), (50, 50), range(80), limit=80)
    assert 5 < named < 80  # 80 names cannot all fit among 400 points; those placed do not overlap
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in ax.texts]
    assert len(boxes) == named
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert g.label_points(ax, x, y, points["label"].tolist(), (50, 50), range(n), limit=3) == 3
