"""The docs hold together: README.md stays a front page and every relative link works.

Links are checked in README.md and docs/*.md: a Markdown link or image whose
target is not a URL must name an existing file, and a `#anchor` must be a
heading of the target page (GitHub's slugs).
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _prose(path):
    """The page without fenced code blocks and inline code, where brackets are not links."""
    with open(path, encoding="utf-8") as f:
        text = FENCE.sub("", f.read())
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown page, duplicates numbered as GitHub does."""
    with open(path, encoding="utf-8") as f:
        text = FENCE.sub("", f.read())
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = _slug(heading)
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_slug_matches_github():
    assert _slug("Predict: masks for your own pictures") == "predict-masks-for-your-own-pictures"
    assert _slug("The demo (`python demo.py`)") == "the-demo-python-demopy"
    assert _slug("Training step, 572x572 input, Adam") == "training-step-572x572-input-adam"


def test_readme_is_a_front_page():
    with open(PAGES[0], encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 250


def test_the_docs_pages_exist():
    names = {os.path.basename(p) for p in PAGES[1:]}
    assert {"README.md", "convert.md", "train.md", "inference.md", "distributed.md",
            "performance.md", "tensorboard.md", "bad_inputs.md", "reliability.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_and_images_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            broken.append(f"{target}: no such file")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_index():
    index = os.path.join(ROOT, "docs", "README.md")
    linked = {t.partition("#")[0] for t in LINK.findall(_prose(index))}
    for page in PAGES[1:]:
        name = os.path.basename(page)
        assert name == "README.md" or name in linked, f"docs/README.md does not list {name}"


# Each command's flags must be documented on its stage's pages (--help and docs in step).
COMMAND_PAGES = {
    "convert_coco": ["convert.md"],
    "convert_pets": ["convert_pets.md"],
    "convert_yolo": ["convert_yolo.md"],
    "convert_masks": ["convert_masks.md"],
    "train": ["train.md", "augmentation.md", "distributed.md", "performance.md",
              "reliability.md", "tensorboard.md"],
    "evaluate": ["inference.md"],
    "predict": ["inference.md"],
    "export": ["inference.md"],
    "demo": ["train.md"],
}


@pytest.mark.parametrize("command", sorted(COMMAND_PAGES))
def test_every_flag_of_help_is_documented(command, capsys):
    import importlib

    module = importlib.import_module(command)
    with pytest.raises(SystemExit) as done:  # argparse prints the help and exits 0
        module.main(["--help"])
    assert done.value.code == 0
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", capsys.readouterr().out))
    flags.discard("--help")
    text = ""
    for page in COMMAND_PAGES[command]:
        with open(os.path.join(ROOT, "docs", page), encoding="utf-8") as f:
            text += f.read()
    missing = sorted(f for f in flags if not re.search(rf"`{re.escape(f)}(?![\w-])", text))
    assert flags and not missing, f"{command}.py --help flags missing from docs: {missing}"
