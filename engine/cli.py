"""The common command line of the training scripts and evaluate.py: --config FILE, shortcuts (--device, --seed,
--out, --run-name), `key=value` overrides, the run-folder flags (--resume, --allow-data-change, --overwrite),
--print-config, and the list of every config key (engine/schema.py) at the end of --help."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import yaml

from engine.config import load_config
from engine.options import RunFinished, RunOptions
from engine.schema import keys_help
from utils import HelpFormatter

def config_parser(prog: str, description: str, example: str, default_config: str | None = "configs/demo.yaml",
                  resume: bool = True) -> argparse.ArgumentParser:
    """The common command line: --config FILE, shortcuts, and key=value overrides."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter,
        epilog=f"examples:\n  {example}\n\nOverrides use dotted keys of the config (see configs/*.yaml), "
               f"e.g. supcon.steps=100 data.balance=false.\n\n{keys_help()}")
    parser.add_argument("--config", default=default_config,
                        help=f"YAML config (default: {default_config or 'configs/demo.yaml unless --test is given'})")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (same as device=...)")
    parser.add_argument("--seed", type=int, help="random seed (same as seed=...)")
    parser.add_argument("--out", help="folder for run folders (same as out_dir=...)")
    parser.add_argument("--run-name", help="run folder name (same as run_name=...; default: the config's name)")
    # evaluate.py accepts the training flags without using them: the .sh scripts pass them through
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the run folder from its latest checkpoint" if resume
                        else argparse.SUPPRESS)
    parser.add_argument("--allow-data-change", action="store_true",
                        help="with --resume: continue even if the data sets differ from the checkpoint's" if resume
                        else argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true",
                        help="the run folder holds a run: move it aside to <method>.old-<time> (nothing is "
                             "deleted) and train a new one there" if resume else argparse.SUPPRESS)
    if resume:  # (training scripts)
        parser.add_argument("--print-config", action="store_true",
                            help="print the resolved config (defaults <- file <- overrides) as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace, config: str | None = None) -> dict:
    """The config of a parsed command line: --config (or `config`), the shortcuts, then the overrides."""
    overrides = list(args.overrides)
    for key, value in (("device", args.device), ("seed", args.seed), ("out_dir", args.out),
                       ("run_name", args.run_name)):
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(config or args.config, overrides)


def training_command(prog: str, doc: str, example: str, argv: list[str] | None) -> tuple[dict, RunOptions] | None:
    """A training script's command line: its config and run-folder options, or None when there is nothing to
    train (--print-config has printed the config). Parsed before the script imports its method: torch, timm
    and torchvision take seconds to import, which --help and a config error need not wait for."""
    args = config_parser(prog, doc, example).parse_args(argv)
    cfg = config_from_args(args)
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return None
    return cfg, RunOptions(args.resume, args.allow_data_change, args.overwrite)


def train(method_train: Callable[[dict, RunOptions], dict], cfg: dict, opts: RunOptions) -> int:
    """Run a method's train(cfg, opts); --resume of a finished run trains nothing, says so and succeeds."""
    try:
        method_train(cfg, opts)
    except RunFinished as done:
        print(done, file=sys.stderr)
    return 0
