"""The code blocks of README.md and docs/: collect them, check their markers, run them.

The convention (docs/contributing.md repeats it):

- Every fenced block names its language. A bare fence is an error, so no command hides untested.
- ```python blocks run, in order, in one namespace per page (a later block may use an earlier
  one's names), with the current directory a fresh temporary folder. Hub names of released
  checkpoints cannot be downloaded in CI, so the runner replaces the string literals listed in
  ``HUB_STAND_INS`` by folders of tiny random models that share the shipped default model's codec
  (``tests/tiny_models.py``); everything else runs as written, the shipped default model included.
- ```bash / ```sh / ```shell blocks run with ``bash -euo pipefail`` in a fresh temporary folder,
  ``magnet-jax`` meaning this checkout's ``python -m magnet_jax.cli``, unless the last non-blank
  line before the fence is a marker:
    ``<!-- docs-test: pod-scale -->``   not run: needs an accelerator, a pod or the network;
    ``<!-- docs-test: not-run REASON -->``  not run, for the reason given (hours on a CPU, ...);
    ``<!-- docs-test: covered-by PATH[::TEST] -->``  not run here because PATH (a test file, or
    .ci/run) runs the same command at tiny scale; PATH must exist, and TEST must be a function in it.
- Other languages (```text, ```json, ```yaml, ...) are shown, never run.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

from xla_flags import xla_flags

ROOT = Path(__file__).resolve().parent.parent
SHELL = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
# released checkpoints the examples name -> the tiny stand-in the runner substitutes ("magnet" / "musicgen")
HUB_STAND_INS = {
    "facebook/magnet-small-10secs": "magnet",
    "facebook/musicgen-small": "musicgen",
}


@dataclasses.dataclass
class Block:
    path: Path
    line: int           # 1-based line of the opening fence
    lang: str
    code: str
    marker: tuple[str, str] | None   # (kind, argument) of a docs-test comment right before the fence

    @property
    def where(self) -> str:
        try:
            name = self.path.relative_to(ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def collect(path: Path) -> list[Block]:
    lines = Path(path).read_text().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mk = MARKER.match(prev)
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        blocks.append(Block(Path(path), i + 1, lang, "\n".join(body) + "\n",
                            (mk["kind"], mk["arg"]) if mk else None))
        i = j + 1
    return blocks


def marker_errors(block: Block) -> list[str]:
    """What is wrong with a block's language or marker (empty when nothing is)."""
    if not block.lang:
        return [f"{block.where}: a fence without a language (write ```bash, ```python, ```text, ...)"]
    if block.marker is None:
        return []
    kind, arg = block.marker
    if block.lang not in SHELL:
        return [f"{block.where}: docs-test markers apply to shell blocks; this one is ```{block.lang}"]
    if kind == "pod-scale":
        return []
    if kind == "not-run":
        return [] if arg else [f"{block.where}: not-run needs a reason (<!-- docs-test: not-run REASON -->)"]
    if kind == "covered-by":
        file, _, test = arg.partition("::")
        target = ROOT / file
        if not file or not target.is_file():
            return [f"{block.where}: covered-by names {file!r}, which does not exist"]
        if test and not re.search(rf"^\s*def {re.escape(test)}\(", target.read_text(), re.M):
            return [f"{block.where}: covered-by names {test!r}, which is not a function in {file}"]
        return []
    return [f"{block.where}: unknown docs-test marker {kind!r} (pod-scale, not-run REASON or covered-by PATH[::TEST])"]


def runs(block: Block) -> bool:
    return block.lang == "python" or (block.lang in SHELL and block.marker is None)


def substitute(code: str, stand_ins: dict[str, str]) -> str:
    for name, folder in stand_ins.items():
        code = code.replace(f'"{name}"', repr(str(folder))).replace(f"'{name}'", repr(str(folder)))
    return code


def run_python(blocks: list[Block], cwd: Path, stand_ins: dict[str, str]) -> str | None:
    """Runs one page's python blocks in one namespace; None, or the failure with its block and line."""
    namespace: dict = {"__name__": "__docs__"}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        for block in blocks:
            try:
                code = compile(substitute(block.code, stand_ins), block.where, "exec")
                exec(code, namespace)
            except BaseException:   # noqa: BLE001 - report any failure with its place
                return f"{block.where} failed:\n{traceback.format_exc(limit=-3)}"
    finally:
        os.chdir(old)
    return None


def shell_env(tmp: Path) -> dict:
    """The environment a shell block runs in: ``magnet-jax`` is this checkout's CLI in this Python."""
    bin_dir = tmp / "_bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "magnet-jax"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec {sys.executable} -m magnet_jax.cli "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = xla_flags()      # one CPU device, as a user has; the suite's compile level
    return env


def run_shell(block: Block, cwd: Path, timeout: float = 300) -> str | None:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd, env=shell_env(cwd),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        return (f"{block.where} exited {done.returncode}:\n{textwrap.indent(block.code, '    ')}"
                f"stderr:\n{done.stderr[-3000:]}")
    return None
