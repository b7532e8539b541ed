#!/usr/bin/env bash
# A real Slurm in the test: starts munge and a one-node cluster (slurmctld and
# slurmd on localhost, private ports, state and sockets in a temp folder), submits
# deploy/slurm/submit.sh's array of 4 `plip index --shard auto` tasks over the
# fixture images and its afterok merge job, and checks that the merged index
# answers like a single-process index (same hits, scores to 1e-5).
#
#   tests/slurm.sh            # uses target/debug/plip (build it first)
#
# Installs Debian's slurm-wlm and munge when missing (.ci/run installs them with
# its one apt-get update). Every wait is bounded; the daemons are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PLIP=${PLIP:-$REPO/target/debug/plip}
[ -x "$PLIP" ] || { echo "slurm.sh: $PLIP missing; run cargo build first" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "slurm.sh: SKIPPED: Slurm and munge are not installed and there is no apt-get" >&2
        exit 0
    fi
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends slurm-wlm munge
fi

W=$(mktemp -d /tmp/plip-slurm.XXXXXX)
chmod 755 "$W"
export SLURM_CONF=$W/slurm.conf
MUNGE_SOCK=$W/munge/munge.sock
cleanup() {
    local rc=$?
    if [ -f "$W/slurmctld.pid" ]; then
        timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    fi
    for pid in "$W/slurmd.pid" "$W/slurmctld.pid" "$W/munge/munged.pid"; do
        if [ -f "$pid" ]; then
            p=$(cat "$pid")
            for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
        fi
    done
    if [ $rc -ne 0 ]; then
        echo "slurm.sh: FAILED; logs:" >&2
        tail -n 30 "$W"/log/*.log "$W"/work/*.log 2>/dev/null >&2 || true
    fi
    rm -rf "$W"
    exit $rc
}
trap cleanup EXIT

# munge, with a private key and socket.
mkdir -p "$W/munge" "$W/state" "$W/spool" "$W/log" "$W/work"
chmod 755 "$W/munge"
dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$W/munge/munge.key"
munged -f --key-file="$W/munge/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$W/munge/munged.pid" --log-file="$W/log/munged.log" \
    --seed-file="$W/munge/munged.seed"

# One node, named localhost, with the hardware slurmd finds.
NODE=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]*/NodeName=localhost/')
PORT=$((20000 + RANDOM % 20000))
cat > "$SLURM_CONF" <<CONF
ClusterName=plipci
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=600
ReturnToService=2
MpiDefault=none
$NODE State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -c -i
slurmd -N localhost

wait_for() { # wait_for SECONDS DESCRIPTION CMD...: poll CMD every second
    local limit=$1 what=$2
    shift 2
    for _ in $(seq "$limit"); do
        if "$@"; then return 0; fi
        sleep 1
    done
    echo "slurm.sh: timed out after ${limit}s waiting for $what" >&2
    return 1
}
node_idle() { sinfo -h -N -o '%t' 2>/dev/null | grep -qx idle; }
wait_for 60 "the node to be idle" node_idle
echo "slurm.sh: one-node cluster up: $(sinfo -h -o '%P %a %D %t %c CPUs')"

# The job, as users submit it.
mkdir -p "$W/work/imgs"
cp fixtures/images/* "$W/work/imgs/"
cd "$W/work"
export PLIP HF_HUB_OFFLINE=1 PLIP_MODEL=$REPO/fixtures/model
export IMAGES=$W/work/imgs SHARDS=$W/work/shards OUT=$W/work/.plip
SBATCH_EXTRA="--cpus-per-task=1 --mem=0 --time=10 --chdir=$W/work" \
    "$REPO/deploy/slurm/submit.sh" 4 | tee submit.txt
ARRAY=$(awk '{print $3}' submit.txt)
MERGE=$(awk '{print $7}' submit.txt)
queue_empty() { [ -z "$(squeue -h -j "$ARRAY,$MERGE" 2>/dev/null)" ]; }
wait_for 300 "the index array and the merge job" queue_empty
for j in "${ARRAY}_0" "${ARRAY}_1" "${ARRAY}_2" "${ARRAY}_3" "$MERGE"; do
    state=$(scontrol show job "$j" | grep -o 'JobState=[A-Z_]*' | head -n 1)
    [ "$state" = JobState=COMPLETED ] || { echo "slurm.sh: job $j ended with $state" >&2; exit 1; }
done
cat plip-index-*.log plip-merge-*.log

# The oracle: the same images in one process.
"$PLIP" -q index imgs --index "$W/work/single/.plip"
n_shards=$(find shards -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$n_shards" -eq 4 ] || { echo "slurm.sh: $n_shards shard folders, expected 4" >&2; exit 1; }
for q in "tumor tissue" "lymphocytes" "a photo of a cat"; do
    "$PLIP" search "$q" --index "$OUT" --json -k 50 > merged.jsonl
    "$PLIP" search "$q" --index "$W/work/single/.plip" --json -k 50 > single.jsonl
    hits() { sed -E 's/.*"score":([^,]*),"path":"(.*)"\}$/\1 \2/' "$1"; }
    paste -d ' ' <(hits merged.jsonl) <(hits single.jsonl) | awk -v q="$q" '
        { d = $1 - $3; if (d < 0) d = -d
          if ($2 != $4 || d > 1e-5) { print "slurm.sh: " q ": " $0 > "/dev/stderr"; bad = 1 } }
        END { if (NR == 0 || bad) exit 1 }'
    [ "$(wc -l < merged.jsonl)" -eq "$(wc -l < single.jsonl)" ]
done
echo "slurm.sh: OK: 4 array tasks + afterok merge == single-process index ($(wc -l < merged.jsonl) hits per query)"
