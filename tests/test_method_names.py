"""Nothing outside the method registry branches on a method's name."""

from __future__ import annotations

import re
from pathlib import Path

from steer.methods import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_outside_the_registry_compares_a_method_name_with_a_literal():
    names = "|".join(re.escape(n) for n in REGISTRY)
    literal = rf"[\"'](?:{names})[\"']"
    patterns = [rf"(?:==|!=)\s*{literal}", rf"{literal}\s*(?:==|!=)", rf"\bin\s*[\(\[{{]\s*{literal}",
                rf"\.startswith\(\s*{literal}", rf"\.get\(\s*[\"']method[\"']\s*,\s*{literal}"]
    offenders = []
    for path in sorted((ROOT / "steer").rglob("*.py")):
        if path.name == "methods.py" and path.parent.name == "steer":
            continue
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            # "kl" also names a strength of GuidedStylePrior, which is compared as such.
            if "strength" not in line and any(re.search(p, line) for p in patterns):
                offenders.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()}")
    assert offenders == []
