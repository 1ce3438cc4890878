"""`alignkit label ...`: user errors end in one message and exit 2; add-annotator prints a working URL."""

from label_helpers import write_project

from alignkit.cli import main
from alignkit.label.importer import open_project
from alignkit.label.project import load_project


def test_add_annotator_prints_a_personal_url(tmp_path, capsys):
    path = write_project(tmp_path, public_url="http://labels.example:9000/")
    assert main(["label", "add-annotator", str(path), "ann"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("http://labels.example:9000/login/")
    assert open_project(load_project(path)).annotator_for_token(url.rsplit("/", 1)[1]) == "ann"


def test_user_errors_exit_2_with_one_message(tmp_path, capsys):
    path = write_project(tmp_path)
    cases = [
        (["label", "stats", str(tmp_path / "nope.yaml")], "config file not found"),
        (["label", "stats", str(path), "annotators_per_itme=3"], "did you mean 'annotators_per_item'"),
        (["label", "export", str(path), "-f", "ranked", "-o", str(tmp_path / "x"), "--task", "choose"],
         "needs a task with scores: one of rank, rate"),
        (["label", "add-annotator", str(path), "bad name!"], "annotator name"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
