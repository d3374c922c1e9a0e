"""scripts/check-refs, the reference check of `make test` (docs/development.md,
"The test suites"), in a repository of its own. The paths below name the fixtures'
files, so this file tells the real check: check-refs: not a reference.

Each kind of reference it reads resolves when its target exists and is reported,
with file and line, when not. lychee's part is replaced by a stand-in that reports
the links it was given as resolved: lychee itself is a tool of its own, run by
`make check-refs`."""

import os
import shutil
import subprocess
import sys

from harness import REPO_ROOT

# A stand-in for lychee: writes a report with every Markdown file it was given
# counted as one resolved link, as lychee's `--format json --output` does.
FAKE_LYCHEE = """#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
out = args[args.index("--output") + 1]
files = [a for a in args if a.endswith(".md")]
json.dump({"total": len(files), "successful": len(files), "errors": 0,
           "error_map": {}}, open(out, "w"))
"""


def make_repo(tmp_path, files):
    """A git repository holding scripts/check-refs and `files` (path -> text)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "scripts" / "check-refs", repo / "scripts" / "check-refs")
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    # The checker names files of the real repository in its own text: keep it out
    # of what it reads here.
    (repo / ".gitignore").write_text("/scripts/\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    lychee = tmp_path / "lychee"
    lychee.write_text(FAKE_LYCHEE)
    lychee.chmod(0o755)
    return repo, lychee


def check(repo, lychee):
    env = dict(os.environ, LYCHEE=str(lychee))
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
    repo, lychee = make_repo(tmp_path, GOOD)
    run = check(repo, lychee)
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
    repo, lychee = make_repo(tmp_path, files)
    run = check(repo, lychee)
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


def test_without_lychee_the_check_fails_and_says_how_to_get_it(tmp_path):
    repo, _ = make_repo(tmp_path, GOOD)
    env = dict(os.environ, LYCHEE=str(tmp_path / "no-such-lychee"))
    run = subprocess.run([sys.executable, "scripts/check-refs"], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "make deps-lychee" in run.stdout + run.stderr
