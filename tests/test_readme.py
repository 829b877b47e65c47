"""The README and the pages it links to say what the code does: every `autoplace` command shown parses with the real
parser (nothing is run), every relative link resolves, the README stays a five-minute read, and the benchmark tables
in benchmarks/README.md are the scripts' own, written between their markers."""
import argparse
import re
import shlex
import sys
import urllib.parse

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402

from autoplace.cli import build_parser  # noqa: E402
from autoplace.errors import AutoplaceError  # noqa: E402

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
MAX_README_CHARS = 10_000
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)


def _rel(path):
    return str(path.relative_to(REPO))


def command_lines(text: str) -> list[str]:
    """Each `autoplace ...` command in the text's shell code blocks, continuation lines joined."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang.strip() not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("autoplace "):
                found.append(line)
    return found


def parse_error(line: str) -> str | None:
    """None if the real parser accepts the command's arguments, else why it does not."""
    tokens = shlex.split(line, comments=True)
    try:
        build_parser().parse_args(tokens[1:])
    except AutoplaceError as exc:
        return str(exc)
    except SystemExit as exc:  # --help, --version, or an argparse path that bypasses the one-line error
        return f"exited with {exc.code}"
    return None


def _subcommands() -> dict:
    """Each subcommand's parser, and the top-level one under "" (`autoplace --version`)."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **action.choices}


def unknown_inline_flags(text: str) -> list[str]:
    """Flags in `autoplace SUB ...` code spans (prose, or comments in code blocks) that SUB does not have. The spans are
    often fragments (`autoplace train --template DIR`), so only their flags are checked, not whole commands."""
    subs, bad = _subcommands(), []
    for span in re.findall(r"`(autoplace [^`\n]+)`", text):
        words = span.split()
        sub, rest = ("", words[1:]) if words[1].startswith("-") else (words[1], words[2:])
        if sub not in subs:
            bad.append(f"{span}: no subcommand {sub!r}")
            continue
        known = subs[sub]._option_string_actions
        bad += [f"{span}: {flag}" for flag in (w.split("=")[0] for w in rest) if flag.startswith("--")
                and flag not in known]
    return bad


def test_the_quick_start_shows_a_search_on_the_offline_default_backbone():
    quick = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = command_lines(quick)
    search = [c for c in commands if c.startswith("autoplace search --task nli")]
    assert search and "--model" not in search[0]  # the default backbone, smollm2-135m, which runs offline
    assert build_parser().parse_args(shlex.split(search[0])[1:]).model == "smollm2-135m"
    assert {c.split()[1] for c in commands} >= {"tasks", "search", "train", "eval", "predict"}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_autoplace_command_in_a_code_block_parses(page):
    commands = command_lines(page.read_text())
    if page == README:
        assert len(commands) >= 6
    failures = {line: why for line in commands if (why := parse_error(line)) is not None}
    assert not failures, failures


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_flag_named_in_an_inline_autoplace_command_exists(page):
    assert unknown_inline_flags(page.read_text()) == []


def test_the_checks_fail_on_a_made_up_flag():
    assert parse_error("autoplace search --task nli --out runs/x") is None
    assert "--made-up-flag" in parse_error("autoplace search --task nli --made-up-flag 3 --out runs/x")
    assert parse_error("autoplace eval") is not None  # a missing positional
    assert unknown_inline_flags("install the extra for `autoplace export --peft`") == [
        "autoplace export --peft: --peft"]
    assert unknown_inline_flags("`autoplace export --format peft` and `autoplace train --template DIR`") == []
    assert unknown_inline_flags("`autoplace --version` and `autoplace serve`") == [
        "autoplace serve: no subcommand 'serve'"]


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (outside code blocks), repeated ones numbered."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def relative_links(text: str) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))  # links in code are not links
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose)
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]  # no http:, mailto: ...


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    links = relative_links(page.read_text())
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        path = (page.parent / urllib.parse.unquote(target)).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no {path}")
        elif anchor and path.suffix == ".md" and anchor not in github_anchors(path.read_text()):
            broken.append(f"{link}: no heading with anchor #{anchor} in {_rel(path)}")
    assert not broken, broken
    if page == README:
        assert {"docs/search.md", "benchmarks/README.md"} <= {link.partition("#")[0] for link in links}


def test_the_anchor_check_knows_githubs_rules():
    text = "# Pruning (`python benchmarks/pruning.py`)\n## Search\n## Search\n```\n# not a heading\n```\n"
    assert github_anchors(text) == {"pruning-python-benchmarkspruningpy", "search", "search-1"}


def test_the_readme_is_a_five_minute_read():
    assert len(README.read_text()) <= MAX_README_CHARS


def test_the_readme_keeps_its_setup_and_test_commands_and_the_peft_flag_is_the_real_one():
    text = README.read_text()
    assert "make setup" in text and "make test" in text
    assert "--format peft" in text and "export --peft" not in text


# the benchmark tables: written by the scripts between markers, never by hand

def test_markers_replace_only_what_lies_between_them():
    text = ("intro\n<!-- results:a start -->\nold a\n<!-- results:a end -->\nreading of a\n"
            "<!-- results:b start -->\nold b\n<!-- results:b end -->\nend\n")
    new = common.replace_between_markers(text, "a", "# Title\n\n| x |\n| --- |\n| 1 |\n")
    assert new == text.replace("old a", "### Title\n\n| x |\n| --- |\n| 1 |")  # headings go below the page's
    assert common.replace_between_markers(new, "a", "# Title\n\n| x |\n| --- |\n| 1 |\n") == new  # idempotent
    assert new.endswith("reading of a\n<!-- results:b start -->\nold b\n<!-- results:b end -->\nend\n")


@pytest.mark.parametrize("text, found", [
    ("no markers at all\n", "found 0 start and 0 end"),
    ("<!-- results:a start -->\nx\n", "found 1 start and 0 end"),
    ("<!-- results:a end -->\nx\n<!-- results:a start -->\n", "found 1 start and 1 end"),
    ("<!-- results:a start -->\n<!-- results:a end -->\n<!-- results:a start -->\n<!-- results:a end -->\n",
     "found 2 start and 2 end"),
    ("<!-- results:ab start -->\nx\n<!-- results:ab end -->\n", "found 0 start and 0 end"),  # another name
])
def test_a_missing_or_broken_marker_pair_is_an_error_that_says_which(text, found):
    with pytest.raises(common.MarkersMissing, match=re.escape(found)) as caught:
        common.replace_between_markers(text, "a", "table")
    assert "<!-- results:a start -->" in str(caught.value)


def test_update_readme_writes_the_file_and_names_it_when_markers_are_missing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- results:x-cpu start -->\n<!-- results:x-cpu end -->\nb\n")
    assert common.update_readme("x-cpu", "| t |", readme) is True
    assert readme.read_text() == "a\n<!-- results:x-cpu start -->\n| t |\n<!-- results:x-cpu end -->\nb\n"
    assert common.update_readme("x-cpu", "| t |", readme) is False
    with pytest.raises(common.MarkersMissing, match=re.escape(str(readme))):
        common.update_readme("y-cpu", "| t |", readme)


def test_results_written_outside_benchmarks_results_leave_the_readme_alone(tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("publish touched the README for a file outside benchmarks/results")
    monkeypatch.setattr(common, "update_readme", must_not_run)
    (tmp_path / "throughput-cpu.md").write_text("| t |\n")
    common.publish(tmp_path / "throughput-cpu.md")  # as gpu_check's throughput run into a temporary folder does


def test_write_results_puts_the_table_it_writes_between_its_markers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "README", tmp_path / "README.md")
    reading = "What it says: the table above is the script's.\n"
    (tmp_path / "README.md").write_text("# Benchmarks\n\n<!-- results:toy-cpu start -->\nstale\n"
                                        "<!-- results:toy-cpu end -->\n\n" + reading)
    monkeypatch.setattr(common, "device_tag", lambda: "cpu")
    _, md = common.write_results("toy", {"rows": [1]}, "| a | b |\n| --- | --- |\n| 1 | 2 |")
    text = (tmp_path / "README.md").read_text()
    assert md.read_text().strip() in text and "stale" not in text and text.endswith(reading)
    assert common.refresh_readme() == ["toy-cpu"] and (tmp_path / "README.md").read_text() == text
    common.write_results("other", {}, "| c |")  # no markers for it: written, and said in one line
    assert (tmp_path / "results" / "other-cpu.md").is_file() and (tmp_path / "README.md").read_text() == text
    assert "other-cpu.md was not copied into the benchmarks README" in capsys.readouterr().err


def test_benchmarks_readme_holds_each_results_file_exactly_as_its_script_wrote_it():
    text = common.README.read_text()
    names = re.findall(r"<!-- results:(\S+) start -->", text)
    written = [n for n in names if (common.RESULTS / f"{n}.md").is_file()]
    assert {"throughput-cpu", "placement_study-small-cpu", "pruning-cpu", "precision-cpu",
            "search_cost-cpu"} <= set(written)
    for name in written:  # `python benchmarks/common.py` would change nothing
        assert common.replace_between_markers(text, name, (common.RESULTS / f"{name}.md").read_text()) == text, name
