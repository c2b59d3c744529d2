#!/usr/bin/env python
"""Generate the committed Serve config files from the typed deployment profiles.

python scripts/serve_configs.py           # (re)write deployments/configs/{local,gpu}.yaml
python scripts/serve_configs.py --check   # exit 1 if a committed file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render(profile: str) -> str:
    from deployments.profiles import profile as get_profile
    from deployments.serve_config import dump, serve_config

    rel = f"deployments/configs/{profile}.yaml"
    return dump(serve_config(get_profile(profile)), profile, rel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check the files are current")
    parser.add_argument(
        "--profile",
        choices=["local", "gpu"],
        action="append",
        help="profile(s) to render (default both)",
    )
    args = parser.parse_args(argv)
    stale = []
    for profile in args.profile or ["local", "gpu"]:
        path = ROOT / "deployments" / "configs" / f"{profile}.yaml"
        text = render(profile)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            f"stale serve configs: {', '.join(stale)}; run python scripts/serve_configs.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
