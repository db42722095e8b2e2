"""`digitflow train`: the training pipeline (flows/training/flow.py) from the command line.

Options are resolved by flows.training.run_config (flags, then the environment, then the TOML
file, then the defaults); the flow runs through flows/cli/runner.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from flows.cli.runner import run_flow_command
from flows.registry.promotion import POLICIES
from netcore.config import ARCHS

EXIT_NOT_PUBLISHED = 3


def _hidden_sizes(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        sizes = [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected widths like 128 or 256,128") from None
    if any(n < 1 for n in sizes):
        raise click.BadParameter(f"{value!r}: layer widths must be positive")
    return sizes


@click.command(
    "train",
    epilog="""\b
Examples:
  digitflow train
  digitflow train --arch cnn                     # the convolutional network (README: netcore)
  DIGITFLOW_MNIST_SOURCE=../shared/data/mnist digitflow train --epochs 10 --json
  digitflow train --config train.toml --hidden 256,128 --registry s3://bucket/models
  digitflow train --epochs 1 --promote never     # publish, but leave production alone

Precedence: flags, then the environment, then the --config file, then the defaults.
Exit status: 0 published (promoted to production or not), 3 trained but below --min-accuracy
(not published), 1 error.""",
)
@click.option(
    "--source",
    help="MNIST source: Hub id, folder or fsspec URL. [env DIGITFLOW_MNIST_SOURCE; ylecun/mnist]",
)
@click.option("--revision", help="Hub dataset revision (branch, tag or commit).")
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    help="The network and its training recipe: mlp (784-128-10) or cnn (convolutional; "
    "slower, more accurate). [default mlp]",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the training set.")
@click.option(
    "--hidden", callback=_hidden_sizes, help="The MLP's hidden layer widths, e.g. 128 or 256,128."
)
@click.option("--seed", type=int, help="Seeds the weights, shuffles and augmentation.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per SGD step.")
@click.option(
    "--learning-rate", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate."
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 1),
    help="Publish only at or above this test accuracy. [default 0.97]",
)
@click.option("--registry", help="Model registry: folder or fsspec URL. [DIGITFLOW_HOME/models]")
@click.option(
    "--promote",
    type=click.Choice(POLICIES),
    help="When the new version becomes production, against the current one on the same test "
    "set (exact McNemar test, p < 0.05): never, if-better (a significant improvement), "
    "if-not-worse (no significant regression), always. [default if-not-worse]",
)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML configuration file."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's INFO logs on the console.")
def train(config_file: str | None, as_json: bool, verbose: bool, **flags: Any) -> None:
    """Run the training pipeline: download, prepare, train, evaluate, publish."""
    if flags["arch"] == "cnn" and flags["hidden"] is not None:
        raise click.UsageError("--hidden sets the MLP's layers; --arch cnn has its own")

    def load() -> tuple[Any, dict[str, Any]]:
        from flows.training.flow import training_flow
        from flows.training.run_config import resolve_run_config

        return training_flow, resolve_run_config(flags, config_file).flow_parameters()

    def preload() -> None:
        from flows.training.run import preload_libraries

        preload_libraries()

    summary, timings = run_flow_command(verbose, load, preload)
    summary |= timings
    if as_json:
        click.echo(json.dumps(summary))
    elif summary["published"]:
        click.echo(
            f"published {summary['version']} -> {summary['artifact']}\n"
            f"  test accuracy {summary['test_accuracy']:.2%} (gate {summary['min_accuracy']:.2%}), "
            f"{summary['epochs']} epochs, {summary['train_seconds']:.1f} s of training"
        )
    if not summary["published"]:
        click.echo(
            f"digitflow: not published: test accuracy {summary['test_accuracy']:.2%} is below "
            f"the gate {summary['min_accuracy']:.2%} (--min-accuracy)",
            err=True,
        )
        sys.exit(EXIT_NOT_PUBLISHED)
