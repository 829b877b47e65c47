"""A benchmark's results name the commit of the code that made them: "+dirty" for uncommitted code, not for the
markdown an earlier task of the same chained run rewrote."""
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_markdown_and_results_edits_leave_the_commit_clean_and_code_edits_do_not(tmp_path, monkeypatch):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("benchmarks/run.py", "benchmarks/README.md", "benchmarks/results/x.json"):
        (tmp_path / name).write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "start")
    monkeypatch.setattr(common, "REPO", tmp_path)
    head = common.git_commit()
    assert head and not head.endswith("+dirty")
    (tmp_path / "benchmarks" / "README.md").write_text("a table\n")
    (tmp_path / "benchmarks" / "results" / "x.json").write_text("b\n")
    assert common.git_commit() == head
    (tmp_path / "benchmarks" / "run.py").write_text("b\n")
    assert common.git_commit() == head + "+dirty"
