"""The documentation is tested: README.md and docs/ build into a site with ``mkdocs build --strict``
(broken links, anchors and API references fail), and every code block either runs here or carries
a marker naming why not. The block convention is in ``tests/docs_blocks.py`` and
docs/contributing.md. The tests below also prove that a broken link and a failing example fail.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import docs_blocks as db

PAGES = db.doc_files()
PYTHON_PAGES = [p for p in PAGES if any(b.lang == "python" for b in db.collect(p))]
SHELL_BLOCKS = [b for p in PAGES for b in db.collect(p) if b.lang in db.SHELL and db.runs(b)]


def _name(path: Path) -> str:
    return str(path.relative_to(db.ROOT))


# ---------------------------------------------------------------- markers


def test_every_block_has_a_language_and_a_valid_marker():
    errors = [e for p in PAGES for b in db.collect(p) for e in db.marker_errors(b)]
    assert not errors, "\n".join(errors)


def test_getting_started_commands_run_here():
    """The first page a newcomer follows runs as written (its install block is what .ci/run does)."""
    blocks = db.collect(db.ROOT / "docs" / "getting-started.md")
    assert any(b.lang in db.SHELL and db.runs(b) and "magnet-jax generate" in b.code for b in blocks)


def test_readme_first_screen_says_what_to_type():
    first = "\n".join((db.ROOT / "README.md").read_text().split("\n")[:40])
    assert "pip install -e ." in first and "magnet-jax generate" in first


def test_readme_links_resolve():
    """README.md is outside the site (mkdocs checks docs/ only), so its relative links are checked here."""
    import re
    text = (db.ROOT / "README.md").read_text()
    links = [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in m]
    missing = [link for link in links if not (db.ROOT / link).exists()]
    assert links and not missing, f"README.md links to missing files: {missing}"


# ---------------------------------------------------------------- running the blocks


@functools.lru_cache(maxsize=1)
def _stand_ins(root: str) -> dict[str, str]:
    """Tiny random MAGNeT (4 s) and MusicGen (30 s) folders on the shipped codec, for the hub names."""
    import tiny_models
    folders = {
        "magnet": tiny_models.magnet_folder(Path(root) / "magnet",
                                            dataclasses.replace(tiny_models.MAGNET_CFG, segment_duration=4.0)),
        "musicgen": tiny_models.musicgen_folder(Path(root) / "musicgen",
                                                dataclasses.replace(tiny_models.MUSICGEN_CFG, segment_duration=30.0)),
    }
    return {name: str(folders[kind]) for name, kind in db.HUB_STAND_INS.items()}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    return lambda: _stand_ins(str(tmp_path_factory.mktemp("stand_ins")))


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
def test_python_blocks_run(page, stand_ins, tmp_path):
    blocks = [b for b in db.collect(page) if b.lang == "python"]
    needs = any(name in b.code for b in blocks for name in db.HUB_STAND_INS)
    failure = db.run_python(blocks, tmp_path, stand_ins() if needs else {})
    assert failure is None, failure


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_shell_blocks_run(block, tmp_path):
    failure = db.run_shell(block, tmp_path)
    assert failure is None, failure


# ---------------------------------------------------------------- the site


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=config.parent)


def test_site_builds_strict_with_api_reference(tmp_path):
    done = _mkdocs(db.ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "generate_continuation" in api          # rendered from the docstrings
    assert (tmp_path / "site" / "figures" / "latency_cpu.png").is_file()
    assert "fonts.googleapis" not in (tmp_path / "site" / "index.html").read_text()   # offline


# ---------------------------------------------------------------- the checks catch breakage


def test_strict_build_fails_on_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\nSee [the guide](guide.md).\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\ntheme:\n  name: material\n  font: false\n")
    done = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "guide.md" in done.stderr


def test_collector_reports_a_failing_example_and_bad_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```python\nx = 1\n```\n\n```python\nassert x == 2, 'wrong x'\n```\n\n"
        "<!-- docs-test: covered-by tests/no_such_test.py -->\n```bash\nmagnet-jax train\n```\n\n"
        "<!-- docs-test: covered-by tests/test_docs.py::no_such_function -->\n```bash\nls\n```\n\n"
        "```\nmagnet-jax generate\n```\n\n```bash\nexit 3\n```\n")
    blocks = db.collect(page)
    assert [b.lang for b in blocks] == ["python", "python", "bash", "bash", "", "bash"]
    failure = db.run_python(blocks[:2], tmp_path, {})
    assert failure is not None and "page.md:7" in failure and "wrong x" in failure
    errors = [e for b in blocks for e in db.marker_errors(b)]
    assert len(errors) == 3
    assert "no_such_test.py" in errors[0] and "no_such_function" in errors[1] and "without a language" in errors[2]
    assert db.runs(blocks[5]) and not db.runs(blocks[2])
    assert "exited 3" in db.run_shell(blocks[5], tmp_path)
