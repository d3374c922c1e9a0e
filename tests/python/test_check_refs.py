"""scripts/check-refs, the reference check of `make test` (docs/development.md,
"The test suites"), in a repository of its own. The paths below name the fixtures'
files, so this file tells the real check: check-refs: not a reference.

Each kind of reference it reads resolves when its target exists and is reported,
with file and line, when not. In most tests remark, the Markdown link checker, is
replaced by a stand-in that reports one resolved link per file it was given; one
test runs the real remark-validate-links (`make deps-remark`) over broken links."""

import os
import shutil
import subprocess
import sys

import pytest

from harness import REPO_ROOT

# Where `make deps-remark` installs remark and its plugins.
REAL_REMARK_MODULES = REPO_ROOT / "target" / "remark" / "node_modules"

# A stand-in for remark: reports every Markdown file it was given with one local
# link and nothing broken, on stderr, as vfile-reporter-json and
# scripts/remark-count-links.mjs do.
FAKE_REMARK = """#!/usr/bin/env python3
import json, sys
files = [a for a in sys.argv[1:] if a.endswith(".md")]
json.dump([{"path": f, "messages": [{"reason": "1 local links", "ruleId": "local-links",
                                     "source": "remark-count-links"}]} for f in files],
          sys.stderr)
"""


def make_repo(tmp_path, files):
    """A git repository holding scripts/check-refs and `files` (path -> text)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("check-refs", "remark-count-links.mjs"):
        shutil.copy(REPO_ROOT / "scripts" / name, repo / "scripts" / name)
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    # The checker names files of the real repository in its own text: keep it out
    # of what it reads here.
    (repo / ".gitignore").write_text("/scripts/\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    modules = tmp_path / "node_modules"
    (modules / ".bin").mkdir(parents=True)
    (modules / ".bin" / "remark").write_text(FAKE_REMARK)
    (modules / ".bin" / "remark").chmod(0o755)
    return repo, modules


def check(repo, modules):
    env = dict(os.environ, REMARK_MODULES=str(modules))
    return subprocess.run([sys.executable, "scripts/check-refs"], cwd=repo, env=env,
                          capture_output=True, text=True)


GOOD = {
    "docs/guide.md": "# Guide\n\n## How a call travels\n\nSee `src/lib.rs`.\n",
    "src/lib.rs": "// The entry (docs/guide.md, \"How a call\n// travels\"); results in\n"
                  "// bench/results/run-<version>.json.\n",
    "bench/results/run-1.0.json": "{}\n",
    "tests/python/test_one.py": "def test_it():\n    pass\n",
    "tests/notes.txt": "tests/python/test_one.py::test_it, also test_one.py.\n",
}


def test_every_kind_of_reference_resolves(tmp_path):
    repo, modules = make_repo(tmp_path, GOOD)
    run = check(repo, modules)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "links: 1 resolved, 0 broken"
    # src/lib.rs, docs/guide.md and its section, bench/results/run-<version>.json,
    # tests/python/test_one.py and its test_it, the bare test_one.py.
    assert lines[-1] == "check-refs: 7 file references resolved", run.stdout


def test_each_unresolved_reference_is_named_and_fails_the_check(tmp_path):
    files = dict(GOOD)
    files["src/lib.rs"] = ("// See tests/python/test_gone.py and docs/guide.md, \"Cost\".\n"
                           "// Results: bench/results/other-<version>.json.\n")
    files["tests/notes.txt"] = "tests/python/test_one.py::test_missing; test_absent.lua\n"
    repo, modules = make_repo(tmp_path, files)
    run = check(repo, modules)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        "links: 1 resolved, 0 broken",
        'src/lib.rs:1: docs/guide.md has no section "cost"',
        "src/lib.rs:1: no such file: tests/python/test_gone.py",
        "src/lib.rs:2: no such file: bench/results/other-<version>.json",
        "tests/notes.txt:1: tests/python/test_one.py defines no test_missing",
        "tests/notes.txt:1: no test file test_absent.lua under tests/",
        "check-refs: 5 of 8 file references unresolved",
    ], run.stdout


def test_without_remark_the_check_fails_and_says_how_to_get_it(tmp_path):
    repo, _ = make_repo(tmp_path, GOOD)
    run = check(repo, tmp_path / "no-such-node_modules")
    assert run.returncode == 1
    assert "make deps-remark" in run.stdout + run.stderr


@pytest.mark.skipif(not (REAL_REMARK_MODULES / ".bin" / "remark").exists(),
                    reason="remark is not installed (make deps-remark)")
def test_remark_finds_a_missing_file_and_missing_anchors_here_and_elsewhere(tmp_path):
    files = dict(GOOD)
    files["README.md"] = (
        "# Store\n\n## Keys\n\n"
        "[guide](docs/guide.md), [its section](docs/guide.md#how-a-call-travels), "
        "[keys](#keys), [web](https://example.com/gone.md).\n\n"
        "[gone](docs/gone.md), [gone too](docs/gone.md#cost), "
        "[no section](docs/guide.md#cost), [no heading](#values).\n")
    repo, _ = make_repo(tmp_path, files)
    run = check(repo, REAL_REMARK_MODULES)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[:5] == [
        "README.md:7:1: Cannot find file `docs/gone.md`; did you mean `docs/guide.md`",
        "README.md:7:23: Cannot find file `docs/gone.md`; did you mean `docs/guide.md`",
        "README.md:7:23: Cannot find heading for `#cost` in `docs/gone.md`",
        "README.md:7:54: Cannot find heading for `#cost` in `docs/guide.md`",
        "README.md:7:88: Cannot find heading for `#values`",
    ], run.stdout
    # Three good local links; the web link is not checked; four broken links.
    assert lines[5] == "links: 3 resolved, 4 broken", run.stdout
