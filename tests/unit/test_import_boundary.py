"""The library stands alone: importing recsys (all of it) never imports Ray."""

import subprocess
import sys

MODULES = [
    "recsys",
    "recsys.config",
    "recsys.encoder",
    "recsys.index",
    "recsys.retrieval",
    "recsys.ranking",
    "recsys.pipeline",
    "recsys.routing",
    "recsys.artifacts",
    "recsys.build",
    "recsys.evaluate",
    "recsys.cli",
]


def test_importing_recsys_leaves_ray_out() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"recsys imported Ray modules: {out.stdout.strip()[:200]}"


def test_the_check_itself_detects_ray() -> None:
    code = "import sys, ray\nprint('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
