"""Every relative link in README.md and docs/ reaches a file, and its #anchor a heading there."""

import re

LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", flags=re.S)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", markdown).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        base = github_anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_github_anchor_matches_githubs_ids():
    assert github_anchor("Rounds that restart Adam undo what the last round learned: `rlhf.carry-optimizer`") == (
        "rounds-that-restart-adam-undo-what-the-last-round-learned-rlhfcarry-optimizer"
    )
    assert github_anchor("The pair scenario, three seeds") == "the-pair-scenario-three-seeds"
    assert anchors_of("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_every_relative_link_reaches_a_file_and_a_heading(project_dir):
    broken = []
    for doc in [project_dir / "README.md", *sorted((project_dir / "docs").rglob("*.md"))]:
        for target in LINK.findall(FENCE.sub("", doc.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(project_dir)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors_of(dest.read_text()):
                broken.append(f"{doc.relative_to(project_dir)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
