"""Project files: typed, strict, paths relative to the project file."""

import re

import pytest
from label_helpers import write_project

from alignkit.errors import ConfigError
from alignkit.label.project import FINE_GRAINED_ERRORS, load_project


def test_defaults_and_relative_paths(tmp_path):
    p = load_project(write_project(tmp_path))
    assert p.data_path == (tmp_path / "samples.jsonl").resolve()
    assert p.database_path == (tmp_path / "project.sqlite").resolve()
    assert p.config.host == "127.0.0.1" and p.url == "http://127.0.0.1:8765"
    assert p.config.error_categories == FINE_GRAINED_ERRORS


@pytest.mark.parametrize("config, message", [
    ({"taks": ["rank"]}, "taks: unknown key (did you mean 'tasks'?)"),
    ({"tasks": ["sort"]}, "unknown task 'sort'"),
    ({"annotators_per_item": 0}, "annotators_per_item must be at least 1"),
    ({"error_categories": []}, "error_categories needs 1 to 9"),
    ({"port": "eighty"}, "port: expected an integer"),
])
def test_bad_project_files_name_the_key(tmp_path, config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_project(write_project(tmp_path, **config))
