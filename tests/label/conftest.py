"""Fixtures of the labelling tests."""

import pytest
from label_helpers import write_project


@pytest.fixture
def project(tmp_path):
    from alignkit.label.importer import open_project
    from alignkit.label.project import load_project

    def make(rows=None, **config):
        p = load_project(write_project(tmp_path, rows, **config))
        return p, open_project(p)

    return make
