"""The `lance-ref` command line (also `python -m lance_ref`)."""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__
from .allocator import keep_freed_memory
from .experiments import continual, continual_sweep, finetune, lightcl_analysis, oracle, selection_sweep, supervised, sweep


def _add_config_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """One `--option` per field of a config dataclass, typed and defaulted from it, with its help."""
    for field in fields(config_class):
        flag, default = "--" + field.name.replace("_", "-"), field.default
        shown = "none" if default == "" else ("yes" if default else "no") if isinstance(default, bool) else default
        help_text = f"{field.metadata.get('help', '')} (default: {shown})".lstrip()
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text, metavar=type(default).__name__.upper())


def _summary(results: dict) -> str:
    """One line: the result's headline figures."""
    if results["command"] in ("finetune-sweep", "continual-sweep", "selection-sweep", "lightcl-analysis"):
        return results["table"]
    config, peak = results["config"], _mib(results["peak_step_bytes"])
    if results["command"] == "continual":
        return (
            f"{config['strategy']} on {config['benchmark']} ({config['setting']}-incremental): ACC {results['acc']:.2f}%, "
            f"BWT {results['bwt']:+.2f} points; activation bytes per step {results['activation_bytes']:,}, "
            f"strategy bytes {results['strategy_bytes']:,} (replay bytes {results['replay_bytes']:,}), measured step peak {peak}"
        )
    line = f"{config['model']} on {config['dataset']}: test accuracy {results['test_accuracy']:.2f}%"
    if results["command"] == "finetune" and results["budget"] is not None:
        line += (
            f" ({config['method']}, last {config['last_n']} conv layers); at most {results['updated_parameters']:,} of "
            f"{results['conv_parameters']:,} conv parameters updated per epoch (budget {results['budget']:,}); "
            f"backward {results['backward_seconds']:.2f} s in all"
        )
    elif results["command"] == "finetune":
        ratio = results["full_activation_bytes"] / max(results["activation_bytes"], 1)
        line += (
            f" ({config['method']}, last {config['last_n']} conv layers, eps {config['eps']}); activation bytes "
            f"{results['activation_bytes']:,} vs {results['full_activation_bytes']:,} for full backprop ({ratio:.1f}x); "
            f"{results['step_seconds'] * 1e3:.1f} ms per step"
        )
    else:
        line += f" in {results['wall_seconds']:.1f} s; activation bytes per step {results['activation_bytes_per_step']:,}"
    return line + f"; measured step peak {peak}"


def _mib(count) -> str:
    return "n/a" if not count else f"{count / 2**20:.1f} MiB"


COMMANDS = {  # name -> (config, run, one line for the command list, the module whose docstring describes it)
    "train": (supervised.TrainConfig, supervised.run, "train a zoo model on a dataset", supervised),
    "finetune": (finetune.FinetuneConfig, finetune.run, "fine-tune the last layers on new classes (full, hosvd, lance, neq, random, su)",
                 finetune),
    "finetune-sweep": (sweep.SweepConfig, sweep.run, "fine-tune with every method and eps over several seeds", sweep),
    "selection-sweep": (selection_sweep.SelectionSweepConfig, selection_sweep.run,
                        "fine-tune under parameter budgets with every selection policy over several seeds", selection_sweep),
    "continual": (continual.ContinualConfig, continual.run, "learn the tasks of a continual benchmark in turn with one strategy",
                  continual),
    "continual-sweep": (continual_sweep.ContinualSweepConfig, continual_sweep.run, "every continual strategy over several seeds",
                        continual_sweep),
    "lightcl-analysis": (lightcl_analysis.AnalysisConfig, lightcl_analysis.run,
                         "per layer: plasticity when frozen, stability of features (LightCL)", lightcl_analysis),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lance-ref", description="lance-ref experiments without torch: one command each; "
                                     "`lance-ref COMMAND --help` describes a command and its flags.")
    parser.add_argument("--version", action="version", version=f"lance-ref {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (config_class, _, help_text, module) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=inspect.getdoc(module),
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_config_arguments(command, config_class)
        command.add_argument("--out", required=True, metavar="DIR", help="the folder for results.json and the other outputs "
                             "(made if missing)")
        command.add_argument("--quiet", action="store_true", help="no progress output")
    check = commands.add_parser(
        "oracle", help="reference outputs and gradients of a case file, and the errors of your own arrays in it",
        description="Compute lance-ref's outputs and gradients for the op or zoo model named in CASE (an .npz: "
        "'op', 'params' as JSON, the inputs, optionally 'grad_output' and your results as 'user/<name>'), "
        f"write them to --out, and compare your arrays with them. Cases: {', '.join(sorted(oracle.CASES))}.",
    )
    check.add_argument("case", help="the case .npz file")
    check.add_argument("--out", required=True, help="the .npz file for the reference arrays")
    check.add_argument("--rtol", type=float, default=None, help="relative tolerance (default 1e-10 for float64, 1e-4 for float32)")
    check.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-12 for float64, 1e-5 for float32)")
    return parser


def _oracle(args) -> int:
    """Exit 0 when every user array passes (or none is given), 1 when one fails, 2 on bad input."""
    try:
        comparisons = oracle.run(args.case, args.out, args.rtol, args.atol)
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as error:
        print(f"lance-ref oracle: error: {error}", file=sys.stderr)
        return 2
    return 0 if all(c.passed for c in comparisons) else 1


def flagged(message: str, config_class) -> str:
    """`message` with the config's field names (and `out`) written as the flags the user typed:
    a name with an underscore anywhere (`last_n` -> `--last-n`), a one-word name only where it
    opens the message (`eps must be ...`), as one-word names are also plain words."""
    for name in sorted([f.name for f in fields(config_class)] + ["out"], key=len, reverse=True):
        flag = "--" + name.replace("_", "-")
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){name}(?!\w)", flag, message)
        elif re.match(rf"{name}\b(?!-)", message):
            message = flag + message[len(name):]
    return message


def _remove_if_empty(created: list) -> None:
    """Remove the directories `created` (deepest first) that a failed run left empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "oracle":
        return _oracle(args)
    keep_freed_memory()
    config_class, run, *_ = COMMANDS[args.command]
    config = config_class(**{f.name: getattr(args, f.name) for f in fields(config_class)})
    out = Path(args.out)
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        results = run(config, out, show=not args.quiet)
    except (ValueError, TypeError, OSError) as error:
        _remove_if_empty(created)
        reason = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) and error.strerror else str(error)
        print(f"lance-ref {args.command}: error: {flagged(reason, config_class)}", file=sys.stderr)
        return 2
    print(f"{_summary(results)}; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
