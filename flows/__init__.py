"""digitflow's orchestration around netcore: Prefect flows, their plain stages, and the CLI.

One package per role, each importing only the ones listed after it (tests/test_architecture.py):

    cli/        the `digitflow` command line: one module per command, and the flow runner
    training/   the training flow and its stages (download, prepare, train, evaluate, publish)
    reports/    figures, the evaluation's text, the model card, the HTML report
    predict/    the batch-prediction flow and its plain parts (sources, shards, scoring, output)
    registry/   published versions: store, manifest, versions and aliases, ONNX, provenance
    runtime/    what every flow needs to start: Prefect settings, embedded server, console
    paths.py    every location under DIGITFLOW_HOME

docs/architecture.md draws the picture and says where to add a stage, a command or a format.
"""
