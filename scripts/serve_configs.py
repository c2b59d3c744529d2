#!/usr/bin/env python
"""Generate the committed Serve config files from the typed deployment profiles.

python scripts/serve_configs.py           # (re)write deployments/configs/*.yaml
python scripts/serve_configs.py --check   # exit 1 if a committed file is stale

One file per profile in its own topology (``local``: the stages inside the ingress replicas,
``topology.layout: fused``), and ``local-split.yaml``: the local profile with one deployment per
stage (``recsys.config.with_layout``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


CONFIGS = {"local": ("local", None), "gpu": ("gpu", None), "local-split": ("local", "split")}
"""Config file name -> (profile, topology layout: None for the profile's own)."""


def app_config(name: str):  # type: ignore[no-untyped-def]
    """The ``AppConfig`` the config file ``name`` runs."""
    from deployments.profiles import profile as get_profile
    from recsys.config import with_layout

    profile, layout = CONFIGS[name]
    app = get_profile(profile)
    if layout is not None:
        app = with_layout(app, layout)  # type: ignore[arg-type]
    return app


def render(name: str) -> str:
    from deployments.serve_config import dump, serve_config

    profile, layout = CONFIGS[name]
    app = app_config(name)
    rel = f"deployments/configs/{name}.yaml"
    label = profile if layout is None else f"{profile}, topology {layout}"
    return dump(serve_config(app), label, rel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check the files are current")
    parser.add_argument(
        "--profile",
        choices=list(CONFIGS),
        action="append",
        help="config(s) to render (default all)",
    )
    args = parser.parse_args(argv)
    stale = []
    for profile in args.profile or list(CONFIGS):
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
