"""Every hint names a control that exists: each ``--flag`` in sdlocal's messages is a flag the command line takes.

The messages are found by reading the source (``ast``), not by listing them by hand, so a hint added later is
checked too. Docstrings are documentation, not hints; CSS custom properties (``--color-x``) are not flags; pip's
own options in the launcher's pip command lines are another program's flags and are allowed there only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sdlocal.cli import build_parser, known_flags

SOURCE = Path(__file__).resolve().parents[1] / "sdlocal"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CSS_PROPERTY = re.compile(r"(?:var\(\s*|^\s*|[;{]\s*)(--[a-z][a-z0-9-]*)\s*[:,)]", re.MULTILINE)
FOREIGN = {  # file -> flags of other programs that file passes on (never shown to people as sdlocal's)
    "preflight.py": {"--dry-run", "--report", "--quiet", "--ignore-installed", "--disable-pip-version-check",
                     "--extra-index-url"},
    "doctor.py": {"--usecase"},  # AMD's installer: amdgpu-install --usecase=rocm
    "prompts_file.py": {"--steps"},  # A1111's per-line options in "Prompts from file or textbox"
    "doctor_container.py": {"--gpus"},  # docker run --gpus all
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def flags_in_messages(root: Path = SOURCE) -> list[tuple[str, int, str]]:
    """(file, line, flag) for every ``--flag`` in a string literal (f-string parts included), docstrings aside."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        foreign = FOREIGN.get(path.name, set())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
                continue
            css = set(CSS_PROPERTY.findall(node.value))
            for flag in FLAG.findall(node.value):
                if flag not in css and flag not in foreign:
                    found.append((str(path.relative_to(root.parent)), node.lineno, flag))
    return found


def test_the_scan_finds_the_hints_it_is_meant_to_check() -> None:
    """Guards the scan itself: known hints in the engine, the doctor and the UI are seen."""
    seen = {(file, flag) for file, _line, flag in flags_in_messages()}
    for expected in (("sdlocal/engine/generate.py", "--attention-slicing"), ("sdlocal/engine/generate.py", "--medvram"),
                     ("sdlocal/engine/generate.py", "--no-half-vae"), ("sdlocal/doctor.py", "--lowvram"),
                     ("sdlocal/ui/system.py", "--gradio-auth")):
        assert expected in seen, expected


def test_scan_rules_on_examples(tmp_path: Path) -> None:
    (tmp_path / "sdlocal").mkdir()
    (tmp_path / "sdlocal" / "m.py").write_text(
        '"""Docstring naming --not-a-hint."""\n'
        'CSS = "a { color: var(--color-accent); } :root { --my-prop: 1px; }"\n'
        'HINT = f"Start with --no-such-flag or --port {1}."\n', encoding="utf-8")
    assert [flag for _file, _line, flag in flags_in_messages(tmp_path / "sdlocal")] == ["--no-such-flag", "--port"]


@pytest.mark.parametrize(("where", "line", "flag"), flags_in_messages(), ids=lambda v: str(v))
def test_every_flag_a_message_names_exists(where: str, line: int, flag: str) -> None:
    assert flag in known_flags(build_parser()), f"{where}:{line} names {flag}, which sdlocal does not accept"


def test_the_out_of_memory_hint_names_the_memory_flags() -> None:
    from sdlocal.engine.generate import _oom_error
    from sdlocal.engine.request import GenerationRequest

    hint = _oom_error(GenerationRequest(), RuntimeError("CUDA out of memory")).hint
    named = set(FLAG.findall(hint))
    assert {"--attention-slicing", "--medvram", "--lowvram"} <= named <= set(known_flags(build_parser()))
    assert "VAE tiling" in hint


def test_the_small_gpu_finding_names_flags_not_ui_toggles() -> None:
    from sdlocal.doctor import check_gpu_arch

    finding = check_gpu_arch("Tiny GPU", 2 * 1024**3, (8, 6), ["sm_86"])
    assert finding.fix and "in the UI" not in finding.fix
    assert {"--medvram", "--lowvram"} <= set(FLAG.findall(finding.fix))
