#!/usr/bin/env bash
# Checks `plip export` with the readers it is for: pandas/pyarrow, clip-retrieval's
# embedding_reader (parquet_npy) and FAISS (tests/python/check_export.py).
# Not run by CI (it needs those Python packages). Usage:
#   tests/export_readers.sh [PYTHON]   # default: /work/venv-shard/bin/python, else python3
# A venv: python3 -m venv V && V/bin/pip install numpy pandas pyarrow embedding-reader faiss-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/work/venv-shard/bin/python}
[ -x "$PY" ] || PY=python3
PLIP=${PLIP:-$PWD/target/debug/plip}
[ -x "$PLIP" ] || cargo build
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export PLIP_MODEL=$PWD/fixtures/model HF_HUB_OFFLINE=1
mkdir -p "$W/imgs"
cp fixtures/images/* "$W/imgs/"
cd "$W"
"$PLIP" -q index imgs --index idx/.plip
"$PLIP" -q export out --index idx/.plip --rows-per-part 5
"$PLIP" embed --text "tumor tissue" --jsonl > query.jsonl
"$PLIP" search "tumor tissue" --index idx/.plip --json -k 10 > search.jsonl
"$PY" "$OLDPWD/tests/python/check_export.py" out query.jsonl search.jsonl
