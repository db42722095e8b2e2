"""digitflow orchestration: Prefect flows, tasks and the digitflow CLI."""
