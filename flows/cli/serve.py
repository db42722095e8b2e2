"""`digitflow serve`: run the training pipeline on a schedule, and optionally score an inbox folder.

Prefect's embedded server cannot schedule, so serving needs a real one: `make server` starts a
local server (SQLite, 127.0.0.1:4200) and PREFECT_API_URL points digitflow at it.

    make server                                              # in one terminal
    PREFECT_API_URL=http://127.0.0.1:4200/api digitflow serve --cron "0 3 * * *"
    digitflow serve --interval 3600 --config train.toml --inbox data/inbox --predict-interval 600
    digitflow serve --check      # exit 0 when the Prefect server answers (the image's health check)

The training flow is served as the deployment `mnist-training/scheduled` (plus
`batch-predict/inbox` with --inbox, scoring with the production version), one run at a time;
the run's options are resolved here, once, the same way `digitflow train` resolves them. Each
schedule is its own: --cron or --interval for training, --predict-cron or --predict-interval for
the inbox; giving both of a pair is refused. A scheduled run whose data and configuration equal
the production version's skips itself (nothing new to learn) unless --force. SIGTERM or Ctrl-C
stops serving cleanly: runs in flight are cancelled and the schedules paused until the next
`serve`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from flows.paths import default_predictions
from flows.registry.aliases import PRODUCTION
from flows.registry.promotion import POLICIES
from flows.runtime.server import prefect_api_url, server_problem
from flows.runtime.settings import configure_prefect, quiet_console
from flows.training.run_config import RunConfig, resolve_run_config
from netcore.config import ARCHS

DEFAULT_CRON = "0 3 * * *"  # nightly, 03:00 UTC
DEFAULT_PREDICT_CRON = "*/30 * * * *"
START_A_SERVER = (
    "start one with `make server` (or `prefect server start`) and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api"
)


def require_server() -> str:
    """The Prefect API URL, after checking that its server answers; ClickException otherwise."""
    url = prefect_api_url()
    problem = server_problem(url)
    if problem:
        raise click.ClickException(
            f"scheduling needs a Prefect server: {problem}; {START_A_SERVER}"
        )
    return url


def deployments(
    train_schedule: dict[str, Any],
    predict_schedule: dict[str, Any],
    run: RunConfig,
    inbox: str | None,
    force: bool = False,
) -> list[Any]:
    """The training flow as `scheduled` (skipping runs with nothing new to learn unless
    `force`); with an inbox, the batch-predict flow as `inbox`, scoring it with the production
    version of the registry training publishes to."""
    from prefect.deployments.runner import EntrypointType

    from flows.training.flow import training_flow

    # Runs load the flows by module path: the same in a checkout and in the Docker image.
    common = {"entrypoint_type": EntrypointType.MODULE_PATH}
    served = [
        training_flow.to_deployment(
            "scheduled",
            parameters=run.flow_parameters() | {"skip_unchanged": not force},
            description="The digitflow training pipeline on a schedule (digitflow serve).",
            **train_schedule,
            **common,
        )
    ]
    if inbox:
        from flows.predict.flow import predict_flow

        output = str(default_predictions(inbox))
        model = f"{run.registry}@{PRODUCTION}"
        parameters = {"input": inbox, "model": model, "output": output}
        served.append(
            predict_flow.to_deployment(
                "inbox",
                parameters=parameters,
                description="Scores the inbox with the production version (digitflow serve).",
                **predict_schedule,
                **common,
            )
        )
    return served


def schedule_of(
    cron: str, interval: int | None, cron_given: bool, cron_flag: str, interval_flag: str
) -> dict[str, Any]:
    """Prefect's to_deployment schedule arguments for one flow: its cron, or its interval when
    one is given. A cron given too contradicts it: a usage error, as is a bad cron string."""
    if interval and cron_given:
        raise click.UsageError(
            f"{cron_flag} and {interval_flag} both say when to run; give one of them"
        )
    if interval:
        return {"interval": datetime.timedelta(seconds=interval)}
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise click.BadParameter(
            f"{cron!r} is not a cron expression", param_hint=cron_flag
        ) from None
    return {"cron": cron}


def describe(schedule: dict[str, Any]) -> str:
    if "interval" in schedule:
        return f"every {schedule['interval'].total_seconds():g} s"
    return f"on cron {schedule['cron']!r} (UTC)"


@click.command("serve")
@click.option("--cron", default=DEFAULT_CRON, show_default=True, help="When to train (UTC).")
@click.option(
    "--interval",
    type=click.IntRange(min=1),
    help="Train every SECONDS instead of on --cron.",
    metavar="SECONDS",
)
@click.option(
    "--inbox",
    help="Also score this folder (or URL) on --predict-cron with the production version, into "
    "DIGITFLOW_HOME/predictions/<folder name>.parquet.",
)
@click.option(
    "--predict-cron", default=DEFAULT_PREDICT_CRON, show_default=True, help="When to score --inbox."
)
@click.option(
    "--predict-interval",
    type=click.IntRange(min=1),
    help="Score --inbox every SECONDS instead of on --predict-cron.",
    metavar="SECONDS",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with the training run's options (as for `digitflow train`).",
)
@click.option("--source", help="MNIST source for the scheduled runs (Hub id, folder or URL).")
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    help="The network the scheduled runs train (as for digitflow train). [default mlp]",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs per scheduled run.")
@click.option("--min-accuracy", type=float, help="Publish only at this test accuracy or better.")
@click.option("--registry", help="Model registry the scheduled runs publish to.")
@click.option(
    "--promote",
    type=click.Choice(POLICIES),
    help="When a scheduled run's version becomes production (as for digitflow train). "
    "[default if-not-worse]",
)
@click.option(
    "--force",
    is_flag=True,
    help="Train even when the data and configuration equal the production version's.",
)
@click.option(
    "--check", is_flag=True, help="Only check that the Prefect server answers; exit 0 if so."
)
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's INFO logs (each run's).")
def serve_command(
    cron: str,
    interval: int | None,
    inbox: str | None,
    predict_cron: str,
    predict_interval: int | None,
    config_file: Path | None,
    source: str | None,
    arch: str | None,
    epochs: int | None,
    min_accuracy: float | None,
    registry: str | None,
    promote: str | None,
    force: bool,
    check: bool,
    verbose: bool,
) -> None:
    """Train on a schedule through a Prefect server (start one with `make server`).

    \b
    Examples:
      PREFECT_API_URL=http://127.0.0.1:4200/api digitflow serve --cron "0 3 * * *" --epochs 10
      digitflow serve --interval 3600 --config train.toml --inbox data/inbox --predict-interval 600
    """
    configure_prefect(verbose)  # before anything imports Prefect
    if check:
        click.echo(f"Prefect server at {require_server()} answers")
        return
    source_of = click.get_current_context().get_parameter_source
    train_schedule = schedule_of(
        cron, interval, source_of("cron") != ParameterSource.DEFAULT, "--cron", "--interval"
    )
    predict_given = source_of("predict_cron") != ParameterSource.DEFAULT
    predict_schedule = schedule_of(
        predict_cron, predict_interval, predict_given, "--predict-cron", "--predict-interval"
    )
    flags = {
        "source": source,
        "arch": arch,
        "epochs": epochs,
        "min_accuracy": min_accuracy,
        "registry": registry,
        "promote": promote,
    }
    run = resolve_run_config(flags, config_file)
    url = require_server()
    from prefect import serve

    if not verbose:
        quiet_console()
    served = deployments(train_schedule, predict_schedule, run, inbox, force)
    click.echo(f"Serving on the Prefect server at {url} (Ctrl-C or SIGTERM stops):")
    for deployment, schedule in zip(served, (train_schedule, predict_schedule), strict=False):
        click.echo(f"  {deployment.flow_name}/{deployment.name} {describe(schedule)}")
    click.echo(
        f"  training the {run.arch}, publishing to {run.registry} (--promote {run.promote}"
        + (", --force: every run trains" if force else ", unchanged runs skip")
        + ")"
        + (f", scoring {inbox} with {PRODUCTION}" if inbox else "")
    )
    serve(*served, limit=1, print_starting_message=False)
    click.echo("Stopped serving; the schedules are paused until the next `digitflow serve`.")
