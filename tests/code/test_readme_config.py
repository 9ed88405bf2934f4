"""The README's example district config is valid as written (a user copies it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from features.district_config import ConfigError, config_from_dict, consistency_problems

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_config_text() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows no TOML config"
    return blocks[0]


def test_readme_config_validates_as_written() -> None:
    config = config_from_dict(tomllib.loads(readme_config_text()), "README.md")
    assert consistency_problems(config) == []
    assert set(config.subjects) == {"math", "reading"}
    assert config.columns.student_id == "ID"


def test_a_cut_for_one_grade_only_is_refused_naming_the_missing_grades() -> None:
    """Uncommenting the README's one-line cut example without the other grades gets a clear error."""
    text = readme_config_text().replace("# [subjects.math.cuts]", "[subjects.math.cuts]")
    text = text.replace('# "3" = [354, 386, 426]', '"3" = [354, 386, 426]')
    data = tomllib.loads(text)
    assert data["subjects"]["math"]["cuts"] == {"3": [354, 386, 426]}
    expected = r"key 'subjects.math.cuts': cut scores for every grade; missing 4, 5, 6"
    with pytest.raises(ConfigError, match=expected):
        config_from_dict(data, "README.md")
