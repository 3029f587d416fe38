"""The README and the pages of docs/ hold together: every relative link and image
points to a file that exists (and to a heading of it, for a #anchor), every page is
linked from the README, and the README stays short enough to read in five minutes."""

import re
import unicodedata

import pytest

from tests.helpers import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target ends at the first space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# What follows a code span inside a link's text, as in [`--out`](evaluation.md).
IN_LINK_TEXT = re.compile(r"[^\[`]*\]\(")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files():
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path):
    """(line number, text) of the lines outside code fences, inline code removed."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub(lambda code: _code_in_link_text(code, line), line)


def _code_in_link_text(code, line):
    """A code span kept where it is part of a link's text, dropped elsewhere."""
    return code.group(0) if IN_LINK_TEXT.match(line, code.end()) else ""


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped (hyphens and
    underscores kept), spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "-_" or category[0] in "LN":
            kept.append(char)
        elif char == " ":
            kept.append("-")
    return "".join(kept)


def anchors(path):
    """Every anchor of a markdown file's headings, duplicates numbered as GitHub does."""
    found, seen = set(), {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def relative_links(path):
    """(line number, target) of every link that is not a URL of another site."""
    for number, line in prose_lines(path):
        for match in LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            yield number, target


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"


def test_docs_pages_exist():
    assert DOCS.is_dir() and len(list(DOCS.glob("*.md"))) >= 8


def broken_links(page):
    """One line per relative link of a page whose file, or heading, does not exist."""
    broken = []
    for number, target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.name}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor.lower() not in anchors(resolved):
            broken.append(f"{where}: no heading with the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    broken = broken_links(page)
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in relative_links(README)}
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_the_link_check_finds_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Several runs sharing one `--out`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#several-runs-sharing-one---out) and [missing](nowhere.md)\n"
        "[bad anchor](other.md#no-such-heading) [site](https://example.com/x.md)\n"
        "```bash\n# not a heading: [in code](nowhere_either.md)\n```\n"
        "`[in inline code](nowhere_too.md)` ![image](other.md) `code` [`code` text](missing_too.md) `end`\n"
    )
    assert "several-runs-sharing-one---out" in anchors(tmp_path / "other.md")
    assert [target for _, target in relative_links(page)] == [
        "other.md#several-runs-sharing-one---out", "nowhere.md", "other.md#no-such-heading", "other.md",
        "missing_too.md",
    ]
    assert anchors(page) == {"page"}  # the comment in the code block is no heading
    assert broken_links(page) == [
        "page.md:3: nowhere.md: no such file",
        "page.md:4: other.md#no-such-heading: no heading with the anchor #no-such-heading",
        "page.md:8: missing_too.md: no such file",
    ]
