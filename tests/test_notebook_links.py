"""The course's exercises and their solutions stay paired, and the notebooks' links resolve."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"\]\(([^)\s]+?\.(?:ipynb|png|md))(#[\w-]+)?\)")


def markdown_of(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def exercises(path: Path) -> list[str]:
    """The numbered items under the last '## Exercises' heading, one string each."""
    text = markdown_of(path)[-1]
    assert "## Exercises" in text, f"{path.name}: the last markdown cell has no '## Exercises'"
    body = text.split("## Exercises", 1)[1]
    return re.split(r"(?m)^\d+\. ", body)[1:]


def headings(path: Path) -> set[str]:
    """Jupyter's anchors of the markdown headings: spaces become '-'."""
    found = set()
    for text in markdown_of(path):
        for line in text.splitlines():
            if line.startswith("#"):
                found.add(line.lstrip("#").strip().replace(" ", "-"))
    return found


def test_the_course_has_seven_notebooks():
    assert [p.name[:2] for p in COURSE] == ["00", "01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("notebook", COURSE, ids=lambda p: p.name[:2])
def test_every_exercise_links_to_its_own_worked_solution(notebook: Path):
    items = exercises(notebook)
    assert items, f"{notebook.name}: no numbered exercise"
    solutions = NOTEBOOKS / "solutions" / f"{notebook.name[:2]}_solutions.ipynb"
    assert solutions.exists(), f"{solutions} is missing"
    anchors = headings(solutions)
    for k, item in enumerate(items, start=1):
        link = f"solutions/{solutions.name}#Exercise-{k}"
        assert link in item, f"{notebook.name}: exercise {k} does not link to {link}"
        assert f"Exercise-{k}" in anchors, f"{solutions.name}: no '## Exercise {k}' heading"
    extra = {a for a in anchors if a.startswith("Exercise-")} - {
        f"Exercise-{k}" for k in range(1, len(items) + 1)
    }
    assert not extra, f"{solutions.name}: {sorted(extra)} are not exercises of {notebook.name}"


@pytest.mark.parametrize(
    "page",
    [*COURSE, *sorted(NOTEBOOKS.glob("solutions/*.ipynb")), NOTEBOOKS / "README.md"],
    ids=lambda p: p.name,
)
def test_relative_links_resolve(page: Path):
    text = (
        page.read_text(encoding="utf-8") if page.suffix == ".md" else "\n".join(markdown_of(page))
    )
    for target, anchor in LINK.findall(text):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        assert path.exists(), f"{page.name}: link to {target} does not resolve"
        if anchor and path.suffix == ".ipynb":
            assert anchor[1:] in headings(path), f"{page.name}: {target}{anchor} has no heading"


def test_the_readme_lists_every_notebook_and_its_solutions():
    text = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for p in COURSE:
        assert f"]({p.name})" in text, f"notebooks/README.md does not link {p.name}"
        assert f"](solutions/{p.name[:2]}_solutions.ipynb)" in text
    assert not re.search(r"\{\w+\}", text), "notebooks/README.md has an unfilled {placeholder}"
