"""The project's text speaks of what it does and what was measured, not of the work history: no
file in the guide, the docs, the code, the benchmarks or the tests names a work session or an
issue by number."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("README.md", "docs", "otm_fed", "server", "clients", "launcher", "benchmarks", "tests")
# Built from pieces so that this file does not match itself.
HISTORY = re.compile(r"\b(" + "sess" + r"ions?|" + "iss" + r"ues?)\s+[0-9]+", re.IGNORECASE)


def text_files(root: Path) -> list[Path]:
    """Every file under the checked paths, without caches and binary files."""
    paths = []
    for name in CHECKED:
        top = root / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and b"\0" not in path.read_bytes()[:8192]:
                paths.append(path)
    return paths


def history_mentions(root: Path) -> list[str]:
    """``path:line: text`` for every line that names a session or an issue by number."""
    found = []
    for path in text_files(root):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        found += [f"{path.relative_to(root)}:{number}: {line.strip()}"
                  for number, line in enumerate(lines, 1) if HISTORY.search(line)]
    return found


def test_the_pattern_finds_numbered_history_and_nothing_else(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("\n".join(["As " + "Sess" + "ion 11 showed.", "fixed in " + "iss" + "ues 3",
                                                        "one session, the issue's goal", "sessions: 4"]))
    (tmp_path / "docs" / "b.png").write_bytes(b"\x89PNG\0" + ("iss" + "ue 1").encode())
    assert [line.split(":")[1] for line in history_mentions(tmp_path)] == ["1", "2"]


def test_no_file_names_a_session_or_an_issue_by_number():
    found = history_mentions(ROOT)
    assert not found, "the work history is named in:\n" + "\n".join(found)
