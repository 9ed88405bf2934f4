"""The multi-year synthetic district: reproducible, in the vendor's format, consistent with its config,
and with a truth that is reproduced exactly from the written files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import f_oneway

from pipelines import synthetic_long as sl

SMALL = {"n_students": 3000, "years": 3, "seed": 11}


@pytest.fixture(scope="module")
def district() -> sl.LongDistrict:
    return sl.generate_long_district(**SMALL)


@pytest.fixture(scope="module")
def folder(district: sl.LongDistrict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "district"
    sl.write_long_district(district, out)
    return out


@pytest.fixture(scope="module")
def from_files(folder: Path) -> sl.LongDistrict:
    return sl.read_long_district(folder)


@pytest.fixture(scope="module")
def pairs(from_files: sl.LongDistrict) -> pd.DataFrame:
    """Every truth pair joined to the written records (score of the target year included)."""
    return sl.growth_pairs_frame(from_files)


# --------------------------------------------------------------------------------------------
# Reproducibility and format
# --------------------------------------------------------------------------------------------


def test_same_seed_same_district_other_seed_differs(district: sl.LongDistrict) -> None:
    again = sl.generate_long_district(**SMALL)
    for year, frame in district.records.items():
        pd.testing.assert_frame_equal(frame, again.records[year])
    for year, frame in district.expected_growth.items():
        pd.testing.assert_frame_equal(frame, again.expected_growth[year])
    pd.testing.assert_frame_equal(district.school_effects, again.school_effects)
    assert district.config_text == again.config_text
    other = sl.generate_long_district(**{**SMALL, "seed": 12})
    assert not other.records[2022]["ScaleScore"].equals(district.records[2022]["ScaleScore"])


def test_layout_and_file_format_do_not_change_the_district(district: sl.LongDistrict, tmp_path: Path) -> None:
    wide = sl.generate_long_district(**SMALL, layout="wide", file_format="parquet")
    sl.write_long_district(wide, tmp_path / "wide")
    assert sorted(p.name for p in (tmp_path / "wide").glob("students_*.parquet")) == [
        "students_2022.parquet",
        "students_2023.parquet",
        "students_2024.parquet",
    ]
    back = sl.read_long_district(tmp_path / "wide")
    pd.testing.assert_frame_equal(sl.student_years(district), sl.student_years(back), check_dtype=False)
    for year, frame in district.expected_growth.items():
        assert np.array_equal(
            frame["expected_score"].to_numpy(), wide.expected_growth[year]["expected_score"]
        )
    columns = list(back.records[2022].columns)
    assert columns == [*sl.STUDENT_COLUMNS, "MathScaleScore", "MathPerformanceLevel", "ELAScaleScore",
                       "ELAPerformanceLevel"]  # fmt: skip
    # A student-year tested in only one subject has an empty score and level in the other.
    frame = back.records[2023]
    one = frame["MathScaleScore"].isna() ^ frame["ELAScaleScore"].isna()
    assert one.any()
    assert (frame["MathScaleScore"].isna() == frame["MathPerformanceLevel"].isna()).all()


def test_export_columns_and_codes(from_files: sl.LongDistrict, folder: Path) -> None:
    frame = from_files.records[2023]
    assert list(frame.columns) == list(sl.LONG_COLUMNS)
    assert set(frame["AcademicYear"]) == {"2022-2023"}
    assert set(frame["ContentArea"]) == {"MATH", "ELA"}
    assert set(frame["Sex"]) == {"Female", "Male"}
    assert set(frame["EconomicDisadvantageStatus"]) == {"Yes", "No"}
    assert set(frame["EnglishLearnerStatus"]) == {"Y", "N"}
    assert set(frame["IEPStatus"]) == {"Y", "N"}
    assert set(frame["HomeInternetAccess"]) == {"Yes", "No"}
    assert set(frame["ParentEducationLevel"]) == set(sl.PARENT_CODES)
    assert set(frame["GradeLevelWhenAssessed"]) == {f"{g:02d}" for g in range(3, 11)}
    assert frame["DaysAbsent"].between(0, 180).all()
    assert frame["HomeworkCompletionPct"].between(0, 100).all()
    schools = pd.read_csv(folder / "schools.csv", dtype=str)
    assert list(schools.columns) == list(sl.SCHOOL_FILE_COLUMNS)
    assert schools["SchoolCode"].str.fullmatch(r"\d{4}").all()
    assert set(schools["Governance"]) == {"Traditional", "Charter"}
    assert set(schools["SchoolLevel"]) == {"Elementary", "Middle", "High"}
    assert schools["SchoolName"].str.fullmatch(r".+ (Elementary|Middle|High) School").all()
    assert set(frame["SchoolCode"]) <= set(schools["SchoolCode"])
    latest = from_files.records[2024].drop_duplicates("StudentIdentifier")["SchoolCode"].value_counts()
    enrolment = schools.set_index("SchoolCode")["Enrollment"].astype(int)
    assert (enrolment == latest.reindex(enrolment.index)).all()
    # No quoting, like vendor exports.
    assert '"' not in (folder / "assessments_2022.csv").read_text()[:5000]


def test_student_ids_are_unique_ten_digit_strings_stable_across_years(from_files: sl.LongDistrict) -> None:
    ids = {year: frame["StudentIdentifier"] for year, frame in from_files.records.items()}
    for year, series in ids.items():
        assert series.str.fullmatch(r"\d{10}").all(), year
        assert not from_files.records[year].duplicated(["StudentIdentifier", "ContentArea"]).any()
    everyone = pd.concat(ids.values())
    assert everyone.str.startswith("0").any()  # leading zeros kept (about 10% of ids)
    both = set(ids[2022]) & set(ids[2023])
    # about 1/8 enter as the new lowest grade and ~3.5% as movers-in; everyone else is known from 2022
    assert 0.78 < len(both) / ids[2023].nunique() < 0.9


def test_scale_scores_are_integers_within_the_scale(folder: Path, district: sl.LongDistrict) -> None:
    for year in (2022, 2023, 2024):
        raw = pd.read_csv(folder / f"assessments_{year}.csv", usecols=["ScaleScore"])
        assert raw["ScaleScore"].dtype.kind == "i"
        assert raw["ScaleScore"].between(150, 950).all()
        assert raw["ScaleScore"].notna().all()
    expected = pd.concat(district.expected_growth.values())["expected_score"]
    bound = sl.make_spec(range(3, 11), ("math", "reading"), (150, 950), True).noise_bound
    assert expected.between(150 + bound, 950 - bound).all()  # the noise never needs clipping


def test_levels_agree_with_the_config_cuts(from_files: sl.LongDistrict) -> None:
    config = tomllib.loads(from_files.config_text)
    codes = {sub: spec["codes"][0] for sub, spec in config["subjects"].items()}
    checked = 0
    for frame in from_files.records.values():
        for subject, code in codes.items():
            rows = frame[frame["ContentArea"] == code]
            cuts = np.array([config["subjects"][subject]["cuts"][g] for g in rows["GradeLevelWhenAssessed"]])
            level = (rows["ScaleScore"].to_numpy()[:, None] >= cuts).sum(axis=1)
            names = np.array(config["subjects"][subject]["levels"])[level]
            assert (names == rows["PerformanceLevel"].to_numpy()).all()
            checked += len(rows)
    assert checked > 10_000
    levels = pd.concat(from_files.records.values())["PerformanceLevel"].value_counts(normalize=True)
    assert set(levels.index) == set(sl.LEVEL_NAMES)
    assert 0.35 < levels[["Level 3", "Level 4"]].sum() < 0.7


# --------------------------------------------------------------------------------------------
# Population dynamics
# --------------------------------------------------------------------------------------------


def test_yearly_counts_are_present_and_about_as_designed(district: sl.LongDistrict) -> None:
    counts = district.meta["counts"]
    assert set(counts) == {"2022", "2023", "2024"}
    per_grade = 3000 / 8
    for year in ("2023", "2024"):
        c = counts[year]
        previous = counts[str(int(year) - 1)]["enrolled"]
        could_stay = previous - c["graduates"]
        stayers = could_stay - c["leavers"]
        assert c["enrolled"] == 3000
        assert abs(c["graduates"] - per_grade) <= 5
        assert 0.02 < c["leavers"] / could_stay < 0.05
        assert 0.004 < c["repeaters"] / stayers < 0.02
        assert 0 < c["skippers"] / stayers < 0.008
        assert 0.015 < c["school_changes"] / (stayers - c["level_transitions"]) < 0.05
        assert abs(c["level_transitions"] - 2 * per_grade) < 0.1 * per_grade  # 5 -> 6 and 8 -> 9
        assert abs(c["new_cohort"] - per_grade) < 0.05 * per_grade
        assert 0.02 < c["movers_in"] / c["enrolled"] < 0.05
        assert c["first_scores"] >= 0.9 * 2 * (c["new_cohort"] + c["movers_in"])
        assert c["growth_pairs_math"] > 0.8 * c["enrolled"]


def test_untested_students_have_no_rows(district: sl.LongDistrict) -> None:
    counts = district.meta["counts"]
    missing = 0
    for year, frame in district.records.items():
        c = counts[str(year)]
        assert len(frame) == 2 * c["enrolled"] - c["untested_scores"]
        assert frame["ScaleScore"].notna().all() and frame["PerformanceLevel"].notna().all()
        missing += c["untested_scores"]
        per_student = frame.groupby("StudentIdentifier", observed=True).size()
        assert set(per_student.unique()) <= {1, 2}
    share = missing / sum(2 * c["enrolled"] for c in counts.values())
    assert 0.01 < share < 0.03


def test_level_transitions_follow_the_feeder_schools(from_files: sl.LongDistrict) -> None:
    panel = sl.student_years(from_files)
    spec = sl.spec_of(from_files)
    moved = sl.pair_table(panel, spec, 2023)
    for before, after in ((2, 3), (5, 6)):  # grade 5 -> 6 and 8 -> 9
        rows = moved[(moved["grade_p1"] == before) & (moved["grade"] == after)]
        assert len(rows) > 100
        receivers = rows.groupby("school_id_p1")["school_id"].nunique()
        assert (receivers == 1).all()  # each feeder has one receiving school


def test_several_districts_keep_feeder_trees_inside_one_lea(tmp_path: Path) -> None:
    district = sl.generate_long_district(n_students=6000, years=2, seed=3, n_districts=3)
    frame = district.records[2023]
    assert frame["LEAName"].nunique() == 3
    assert (frame.groupby("SchoolCode", observed=True)["LEAName"].nunique() == 1).all()
    panel = sl.student_years(district)
    lea = (
        pd.concat(district.records.values()).drop_duplicates("SchoolCode").set_index("SchoolCode")["LEAName"]
    )
    moved = sl.pair_table(panel, sl.spec_of(district), 2023)
    transition = moved[moved["grade"].isin([3, 6]) & (moved["grade_p1"] == moved["grade"] - 1)]
    assert len(transition) > 100
    assert (
        lea.reindex(transition["school_id"]).to_numpy() == lea.reindex(transition["school_id_p1"]).to_numpy()
    ).all()
    assert 'district = "LEAName"' in district.config_text


# --------------------------------------------------------------------------------------------
# The truth
# --------------------------------------------------------------------------------------------


def test_truth_pairs_use_stored_prior_scores_only(from_files: sl.LongDistrict, pairs: pd.DataFrame) -> None:
    for subject in ("math", "reading"):
        mine = pairs[pairs["subject"] == subject]
        assert (mine["prior_score"].to_numpy() == mine[f"score_{subject}_p1"].to_numpy()).all()
    assert pairs["score"].notna().all()
    truth = pd.concat(from_files.expected_growth.values())
    assert list(truth.columns) == [
        "student_id",
        "subject",
        "prior_score",
        "expected_score",
        "expected_growth",
    ]
    assert truth["student_id"].str.fullmatch(r"\d{10}").all()
    assert np.allclose(truth["expected_growth"], truth["expected_score"] - truth["prior_score"], atol=1e-9)


def test_residual_is_the_documented_noise_and_independent(
    from_files: sl.LongDistrict, pairs: pd.DataFrame
) -> None:
    noise_sd = from_files.meta["noise_sd"]["math"]
    assert noise_sd == pytest.approx(16.0)
    for subject in ("math", "reading"):
        mine = pairs[pairs["subject"] == subject]
        resid = (mine["score"] - mine["expected_score"]).to_numpy()
        assert len(resid) > 4000
        assert resid.std() == pytest.approx(noise_sd, rel=0.04)
        assert abs(resid.mean()) < 0.6
        assert np.abs(resid).max() <= from_files.meta["noise_bound"] + 0.5
        assert abs(np.corrcoef(resid, mine["prior_score"])[0, 1]) < 0.05
        assert abs(np.corrcoef(resid, mine["expected_score"])[0, 1]) < 0.05
        groups = [g.to_numpy() for _, g in pd.Series(resid).groupby(mine["school_id"].to_numpy())]
        assert f_oneway(*groups).pvalue > 0.001


def test_peer_context_recomputed_from_the_files(folder: Path, from_files: sl.LongDistrict) -> None:
    effects = pd.read_csv(folder / "truth" / "school_effects.csv", dtype={"school_id": str})
    c = sl.COEFFICIENTS["math"].peer
    s = from_files.meta["s"]
    for year in (2023, 2024):
        prior = pd.read_csv(folder / f"assessments_{year - 1}.csv", dtype=str)
        prior["ScaleScore"] = prior["ScaleScore"].astype(float)
        cell = prior.groupby(["ContentArea", "GradeLevelWhenAssessed"])["ScaleScore"]
        prior["z"] = (prior["ScaleScore"] - cell.transform("mean")) / cell.transform("std", ddof=0)
        context = prior.groupby(["SchoolCode", "ContentArea"])["z"].mean().groupby("SchoolCode").mean()
        truth = effects[(effects["school_year"] == year) & (effects["subject"] == "math")].set_index(
            "school_id"
        )
        recomputed = c * s * context.reindex(truth.index).fillna(0.0)
        assert np.allclose(recomputed.to_numpy(), truth["peer_effect"].to_numpy(), atol=1e-9, rtol=0)
        assert truth["peer_effect"].std() > 1.0  # the term is not trivially zero
        assert np.allclose(truth["effect_with_peers"], truth["effect"] + truth["peer_effect"])


def test_expected_score_is_a_function_of_the_written_files(from_files: sl.LongDistrict) -> None:
    spec = sl.spec_of(from_files)
    panel = sl.student_years(from_files)
    rng = np.random.default_rng(0)
    checked = 0
    for year, truth in from_files.expected_growth.items():
        table = sl.pair_table(panel, spec, year)
        for subject in spec.subjects:
            mine = truth[truth["subject"] == subject]
            sample = mine.iloc[rng.choice(len(mine), size=400, replace=False)]
            rows = table.iloc[pd.Index(table["student_id"]).get_indexer(sample["student_id"])].reset_index(
                drop=True
            )
            inputs = sl.inputs_from_pairs(rows, spec, subject, from_files.school_effects, year)
            recomputed = sl.expected_scores(spec, subject, inputs)
            assert np.abs(recomputed - sample["expected_score"].to_numpy()).max() < 1e-6
            checked += len(sample)
            # The prior scores matter: shifting them moves the truth.
            inputs.prior_score = inputs.prior_score + 10.0
            assert np.abs(sl.expected_scores(spec, subject, inputs) - recomputed).mean() > 2.0
    assert checked == 1600
    assert any(t["subject"].eq("math").any() for t in from_files.expected_growth.values())


def test_truth_json_documents_the_run(from_files: sl.LongDistrict) -> None:
    meta = from_files.meta
    assert meta["seed"] == 11 and meta["version"] == sl.VERSION
    assert meta["years"] == [2022, 2023, 2024]
    assert meta["grades"] == [f"{g:02d}" for g in range(3, 11)]
    assert meta["scale"] == [150, 950] and meta["s"] == 40.0
    assert meta["truncation_z"] == 2.5
    assert set(meta["coefficients"]) == {"math", "reading"}
    assert meta["coefficients"]["math"]["peer"] == sl.COEFFICIENTS["math"].peer
    for key in ("repeaters", "skippers", "movers_in", "school_changes", "level_transitions"):
        assert key in meta["counts"]["2023"]


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_config_parses_and_names_only_exported_columns(layout: str, tmp_path: Path) -> None:
    district = sl.generate_long_district(n_students=1000, years=2, seed=4, layout=layout)
    sl.write_long_district(district, tmp_path)
    config = tomllib.loads((tmp_path / "district.toml").read_text())
    assert config["format"] == layout
    assert config["grades"] == [f"{g:02d}" for g in range(3, 11)]  # top-level, not inside a table
    assert config["duplicates"] == "error"
    records = sorted(tmp_path.glob(config["files"]["records"][0]))
    assert len(records) == 2
    header = set(pd.read_csv(records[0], nrows=0).columns)
    assert set(config["columns"].values()) <= header
    school_header = set(pd.read_csv(tmp_path / config["files"]["schools"], nrows=0).columns)
    assert set(config["school_columns"].values()) <= school_header
    values = config["values"]
    assert values["econ_disadvantaged"] == {"Yes": True, "No": False}
    assert values["english_learner"] == {"Y": True, "N": False}
    assert values["parental_education"]["1"] == "less_than_high_school"
    assert values["parental_education"]["5"] == "graduate"
    assert values["type"] == {"Traditional": "District", "Charter": "Charter"}
    assert config["report"]["passing_word"] == "Proficient"
    spec = sl.spec_of(district)
    for name, subject in config["subjects"].items():
        assert subject["scale"] == [150, 950] and subject["vertical"] is True
        assert subject["proficient"] == "Level 3" and subject["levels"] == list(sl.LEVEL_NAMES)
        assert subject["cuts"] == {g: list(spec.cuts(i)) for i, g in enumerate(spec.grades)}
        if layout == "long":
            assert subject["codes"] == [sl.SUBJECT_CODES[name]]
        else:
            assert {subject["score_column"], subject["level_column"]} <= header
    if layout == "wide":
        assert "subject" not in config["columns"] and "scale_score" not in config["columns"]


def test_config_validates_with_the_project_loader(folder: Path) -> None:
    loader = pytest.importorskip("features.district_config")
    config = loader.load_config(folder / "district.toml")
    assert config.format == "long"
    assert list(config.subjects) == ["math", "reading"]


def test_toml_writer_round_trips() -> None:
    data = {
        "name": 'A "quoted" name',
        "flag": False,
        "n": 3,
        "x": 0.25,
        "grades": ["03", "04"],
        "values": {"econ": {"Yes": True, "No": False}, "codes": {"1": "a b"}},
        "subjects": {"math": {"scale": [150, 950], "cuts": {"03": [1, 2, 3]}}},
    }
    assert tomllib.loads(sl.to_toml(data)) == data


# --------------------------------------------------------------------------------------------
# Other grades and scales, writing
# --------------------------------------------------------------------------------------------


def test_grades_three_to_eight_on_a_200_800_scale() -> None:
    district = sl.generate_long_district(
        n_students=3000, years=3, seed=5, grades=range(3, 9), scale=(200, 800)
    )
    spec = sl.spec_of(district)
    assert spec.s == 30.0 and spec.noise_sd == 12.0
    assert spec.grades == ("03", "04", "05", "06", "07", "08")
    frames = pd.concat(district.records.values())
    assert frames["ScaleScore"].between(200, 800).all()
    assert set(frames["GradeLevelWhenAssessed"]) == set(spec.grades)
    assert set(district.schools["SchoolLevel"]) == {"Elementary", "Middle"}
    means = np.asarray(spec.grade_means)
    assert means[-1] - means[0] == pytest.approx(0.4 * 600)
    assert np.all(np.diff(np.diff(means)) < 0)  # yearly growth declines with grade
    pairs = sl.growth_pairs_frame(district)
    resid = pairs["score"] - pairs["expected_score"]
    assert resid.std() == pytest.approx(12.0, rel=0.05)
    config = tomllib.loads(district.config_text)
    assert config["subjects"]["math"]["scale"] == [200, 800]
    assert list(config["subjects"]["math"]["cuts"]) == list(spec.grades)


def test_not_vertical_means_one_mean_for_every_grade() -> None:
    district = sl.generate_long_district(
        n_students=2000, years=2, seed=5, vertical=False, grades=range(9, 13)
    )
    spec = sl.spec_of(district)
    assert len(set(spec.grade_means)) == 1
    assert len({spec.cuts(i) for i in range(len(spec.grades))}) == 1
    assert set(district.schools["SchoolLevel"]) == {"High"}
    assert tomllib.loads(district.config_text)["subjects"]["math"]["vertical"] is False
    means = (
        pd.concat(district.records.values())
        .groupby("GradeLevelWhenAssessed", observed=True)["ScaleScore"]
        .mean()
    )
    assert (means - 550).abs().max() < 0.3 * spec.s


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        sl.generate_long_district(n_students=2000, grades=("03", "05"))
    with pytest.raises(ValueError, match="layout"):
        sl.generate_long_district(n_students=2000, layout="tall")
    with pytest.raises(ValueError, match="at least 2 school years"):
        sl.generate_long_district(n_students=2000, years=1)


def test_write_replaces_files_and_removes_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "district"
    sl.write_long_district(sl.generate_long_district(n_students=800, years=3, seed=1), out)
    assert (out / "assessments_2024.csv").exists() and (out / "truth" / "expected_growth_2024.csv").exists()
    sl.write_long_district(sl.generate_long_district(n_students=800, years=2, seed=2), out)
    assert sorted(p.name for p in out.glob("assessments_*")) == [
        "assessments_2022.csv",
        "assessments_2023.csv",
    ]
    assert not (out / "truth" / "expected_growth_2024.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["district"]  # no temporary folder left behind
    assert sl.read_long_district(out).meta["seed"] == 2


# --------------------------------------------------------------------------------------------
# Realism and learnability (40,000 students)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def district_40k() -> sl.LongDistrict:
    return sl.generate_long_district(n_students=40_000, seed=42)


@pytest.mark.slow
def test_realism_ranges_on_40k_students(district_40k: sl.LongDistrict) -> None:
    stats = sl.realism_long_stats(district_40k)
    outside = {
        name: round(stats[name], 3)
        for name, (low, high, _) in sl.REALISM_TARGETS.items()
        if not low <= stats[name] <= high
    }
    assert not outside
    assert stats["absence_chronic_effect"] < stats["absence_few_days_effect"] - 0.2
    schools = district_40k.schools
    sizes = pd.cut(schools["Enrollment"], [0, 1000, 2000, 5000]).value_counts()
    spending = pd.cut(schools["TotalBudget"] / schools["Enrollment"], [0, 585, 630, 645, 680]).value_counts()
    assert (sizes > 0).all() and (spending > 0).all() and sizes.sum() == spending.sum() == len(schools)
    assert 0.25 < (schools["Governance"] == "Charter").mean() < 0.45


@pytest.mark.slow
def test_boosting_gets_close_to_the_noise_floor_on_40k_students(district_40k: sl.LongDistrict) -> None:
    rmse = sl.learnability_long(district_40k)
    for subject in ("math", "reading"):
        floor = rmse[f"rmse_noise_floor_{subject}"]
        assert floor == pytest.approx(16.0, rel=0.03)
        assert rmse[f"rmse_ols_priors_{subject}"] > 1.25 * floor
        assert rmse[f"rmse_hgb_all_{subject}"] < 1.05 * floor
