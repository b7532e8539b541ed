#!/bin/bash
# Submits the whole job: N index tasks as one array, then the merge, which
# starts only when all of them succeeded (--dependency=afterok).
#   IMAGES=/data/slides SHARDS=/scratch/plip-shards OUT=/data/.plip ./submit.sh 16
# Extra sbatch options (partition, account) go in SBATCH_EXTRA. Use a fresh
# SHARDS folder when N changes: merge takes every folder in it.
set -euo pipefail
N=${1:?usage: submit.sh N (number of index tasks)}
HERE=$(cd "$(dirname "$0")" && pwd)
: "${IMAGES:?set IMAGES}" "${SHARDS:?set SHARDS}" "${OUT:?set OUT}"
export IMAGES SHARDS OUT
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_EXTRA:-} --array=0-$((N - 1)) "$HERE/index.sbatch")
array=${array%%;*}
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_EXTRA:-} --dependency=afterok:"$array" "$HERE/merge.sbatch")
merge=${merge%%;*}
echo "index array $array ($N tasks), merge $merge"
