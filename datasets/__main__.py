"""python -m datasets describe --config NAME [--paths FILE] [--json OUT]

Counts per split and test set (images, videos, real, fake, domains) and a check that no video or identity
group appears in two of labeled / unlabeled / test (exit status 1 if one does).
"""
from __future__ import annotations

import argparse
import json

from datasets.protocols import describe, format_description, prepare_data, protocol_config
from utils import HelpFormatter, atomic_write_text, resolve_path, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets", description=__doc__, formatter_class=HelpFormatter,
        epilog="examples:\n  python -m datasets describe --config demo\n"
               "  python -m datasets describe --config ff_wo_nt --paths configs/paths.yaml --json ff_wo_nt.json")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="counts and overlap check of a protocol's sets")
    d.add_argument("--config", "--protocol", dest="protocol", required=True,
                   help="a config: a name in configs/ (demo, sin, ff_wo_nt, ...) or a path")
    d.add_argument("--paths", help="paths file with the dataset roots (default: configs/paths.yaml)")
    d.add_argument("--json", help="also write the counts as JSON here")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"data.paths_file={args.paths}"] if args.paths else [])
    cfg = protocol_config(args.protocol, overrides)
    prepare_data(cfg)
    result = describe(cfg, args.protocol)
    print(format_description(result))
    if args.json:
        atomic_write_text(resolve_path(args.json), json.dumps(result, indent=2) + "\n")
    return 1 if result["overlapping_videos"] else 0


if __name__ == "__main__":
    run_cli(main)
