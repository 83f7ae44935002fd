"""The README and the pages under docs/: their Python blocks run as written, their links lead somewhere, and the front
page stays a front page.

Each ```python block of README.md and docs/*.md runs in a fresh interpreter, in a folder where a tiny stand-in of the
main job's output (``outputs/demo/...``: a 16-unit mLSTM, its hub copy, a transfer run) has been made, so the tour
takes seconds, not the main job's minutes. The only edit to a block: the example bucket ``s3://team-models`` becomes a
local ``file://`` folder (no S3 here). A block that cannot run here says why in its fence
(```` ```python not-run: needs ... ````); it is compiled instead.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
FENCED_PYTHON = re.compile(r"^```python([^\n]*)\n(.*?)^```$", flags=re.S | re.M)
NOT_RUN = re.compile(r"not-run: \S.*")  # the fence's note on a block that cannot run here, and why


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def python_blocks() -> tuple[list, list]:
    """``(runnable, not run)``: pytest params ``(page, code)`` or ``(page, note, code)``, with ids like
    ``docs/hub.md-block1`` (blocks numbered in their page's order)."""
    runnable, not_run = [], []
    for page in PAGES:
        for number, match in enumerate(FENCED_PYTHON.finditer(page.read_text(encoding="utf-8")), start=1):
            note, code = match.group(1).strip(), match.group(2)
            block_id = f"{page_id(page)}-block{number}"
            if note:
                not_run.append(pytest.param(page, note, code, id=block_id))
            else:
                runnable.append(pytest.param(page, code, id=block_id))
    return runnable, not_run


RUNNABLE, NOT_RUN_BLOCKS = python_blocks()


def test_the_pages_have_python_blocks():
    assert sum(param.values[0] == README for param in RUNNABLE) >= 2
    assert {param.values[0] for param in RUNNABLE} > {README}  # pages under docs/ run too


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to a page under docs/ and link it"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.split("#")[0] for target in relative_links(README)}
    unlinked = [page_id(page) for page in PAGES[1:] if page_id(page) not in linked]
    assert unlinked == [], f"README.md links no {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_leads_to_a_file_and_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {page_id(resolved)}")
    assert broken == [], f"{page_id(page)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page, note, code", NOT_RUN_BLOCKS)
def test_blocks_that_cannot_run_here_say_why_and_compile(page, note, code):
    assert NOT_RUN.fullmatch(note), f"{page_id(page)}: a fence's note must read 'not-run: <why>', not {note!r}"
    compile(code, page_id(page), "exec")


def without_code(text: str) -> str:
    """Markdown with its fenced blocks and inline code removed: what is left holds the links and headings."""
    text = re.sub(r"^```.*?^```$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(page: Path) -> list[str]:
    """The targets of the page's links and images that are not URLs (``http:``, ``mailto:`` ...)."""
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", without_code(page.read_text(encoding="utf-8")))
    return [target for target in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target)]


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens, and ``-1``,
    ``-2`` ... after a repeated one."""
    text = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen, anchors = Counter(), set()
    for heading in re.findall(r"^#{1,6} +(.*?) *#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """``outputs/demo`` as ``python3 run.py`` leaves it, at a tiny size (and without the TF-IDF baseline, which no
    block reads: it is most of the transfer run's time)."""
    import torch

    import bytezoo
    from bytezoo.cli import main
    from bytezoo.data import prepare_embedded_default

    root = tmp_path_factory.mktemp("readme")
    cache = root / "cache"
    patch = pytest.MonkeyPatch()  # the per-test cache fixture does not cover a module fixture
    patch.setenv("BYTEZOO_CACHE", str(cache))
    demo = root / "outputs" / "demo"
    torch.manual_seed(0)
    model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8)
    model.save_pretrained(demo / "pretrain" / "model")
    bytezoo.ByteTokenizer().save_pretrained(demo / "pretrain" / "model")
    bytezoo.hub.push(demo / "pretrain" / "model", str(demo / "hub" / "mlstm-256"), tag="demo")
    splits = prepare_embedded_default()
    assert main(["transfer", "--model", str(demo / "pretrain" / "model"), "--train", str(splits.train), "--dev",
                 str(splits.dev), "--test", str(splits.test), "--output", str(demo / "transfer"), "--curve-points", "0",
                 "--heatmap-texts", "0", "--baseline", "none", "--no-progress"]) == 0
    yield root, cache
    patch.undo()


@pytest.mark.slow
@pytest.mark.parametrize("page, code", RUNNABLE)
def test_python_block_runs(page, code, demo_folder):
    root, cache = demo_folder
    code = code.replace("s3://team-models", (root / "team-models").as_uri())
    # One thread: the suite runs one worker per core, and two threads per worker on a busy core are 10x slower here.
    env = {**os.environ, "BYTEZOO_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"a block of {page_id(page)} failed:\n{code}\n{result.stderr[-3000:]}"
