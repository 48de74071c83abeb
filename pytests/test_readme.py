"""Every Python snippet in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> List[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def test_readme_has_python_snippets() -> None:
    assert len(_snippets()) >= 2


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs(index: int) -> None:
    code = _snippets()[index]
    exec(compile(code, f"README.md python snippet {index + 1}", "exec"), {"__name__": "readme"})
