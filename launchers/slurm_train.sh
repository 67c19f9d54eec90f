#!/usr/bin/env bash
# Adversarial training on a SLURM cluster: one launcher per node (srun), 8 GPUs per node.
#   sbatch launchers/slurm_train.sh --preset imagenet-resnet50 --data /datasets/imagenet --name r50-aad
#   LAUNCHER=torchrun sbatch --nodes 4 launchers/slurm_train.sh --preset ... train.zero_stage=2
# Arguments go to launchers/train_imagenet.py (or $AADSCALE_SCRIPT, which must take its --name and
# --resume) unchanged, plus --name <job name>-<job id> when neither --name nor log.name= is given.
# Time limit and preemption: SLURM sends USR1 to this script --signal's seconds before the time limit
# (sbatch --signal=B:USR1@600 ... overrides the 300 below) and SIGTERM to every process at preemption.
# Either reaches the ranks through one relay per node (python -m aadscale.distributed.relay); they stop
# at a step boundary with a complete checkpoint and exit 75, and the script requeues the job. A requeued
# start (SLURM_RESTART_COUNT > 0) adds --resume auto; a first start of the same command starts fresh.
#SBATCH --job-name=aadscale
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --mem=0
#SBATCH --time=48:00:00
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

LAUNCHER="${LAUNCHER:-deepspeed}"              # deepspeed | torchrun
if [[ "$LAUNCHER" != deepspeed && "$LAUNCHER" != torchrun ]]; then
  echo "slurm_train.sh: LAUNCHER=$LAUNCHER must be deepspeed or torchrun" >&2
  exit 2
fi
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
AADSCALE_DIR="${AADSCALE_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}"
# Node 0 of the allocation hosts the rendezvous; the port is derived from the job id so that
# two jobs sharing a node do not collide.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"  # sed reads all: no SIGPIPE
MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
export MASTER_ADDR MASTER_PORT

# NCCL: fail fast on a dead peer instead of hanging; pick the fabric explicitly where the
# defaults guess wrong (set NCCL_SOCKET_IFNAME / NCCL_IB_HCA to your interfaces).
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}"
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker}"
export NCCL_NET_GDR_LEVEL="${NCCL_NET_GDR_LEVEL:-PHB}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
export PYTHONUNBUFFERED=1

cd "$AADSCALE_DIR"
SCRIPT="${AADSCALE_SCRIPT:-launchers/train_imagenet.py}"
PYTHON="${PYTHON:-python}"                    # the environment that has aadscale (and deepspeed, torchrun)
STOP_SIGNALS="${STOP_SIGNALS:-SIGTERM,SIGUSR1}"  # the run's train.stop_signals

args=("$@")
given() {  # is option $1 (or the override $1=...) among the arguments?
  local a
  for a in "${args[@]}"; do [[ "$a" == "$1" || "$a" == "$1="* ]] && return 0; done
  return 1
}
given --name || given log.name || args+=(--name "${SLURM_JOB_NAME:-aadscale}-$SLURM_JOB_ID")  # found again on requeue
if (( ${SLURM_RESTART_COUNT:-0} > 0 )) && ! given --resume; then
  echo "slurm_train.sh: restart ${SLURM_RESTART_COUNT} of job $SLURM_JOB_ID: adding --resume auto" >&2
  args+=(--resume auto)
fi
# Each rank records its exit code here (a folder every node sees): rank 0's 75 means "saved, resume me".
export AADSCALE_EXIT_DIR="${AADSCALE_EXIT_DIR:-$AADSCALE_DIR/runs/.exit/$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}}"
mkdir -p "$AADSCALE_EXIT_DIR"
rm -f "$AADSCALE_EXIT_DIR"/rank*  # none left from an earlier start
RELAY=("$PYTHON" -m aadscale.distributed.relay --signals "$STOP_SIGNALS" --)  # one per node: see its docstring

SRUN_PID=""
forward() {  # SLURM's warning (USR1, to this shell only) or preemption (TERM): on to srun, which signals the relays
  echo "slurm_train.sh: $1 received; passing it to the ranks" >&2
  [[ -n "$SRUN_PID" ]] && kill -s "$1" "$SRUN_PID" 2>/dev/null || true
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

case "$LAUNCHER" in
  deepspeed)
    # The DeepSpeed launcher reads the node list from a hostfile; --no_ssh starts it on
    # every node through srun instead of pdsh.
    # On a file system every node sees (each node's launcher reads it).
    HOSTFILE="${HOSTFILE:-$AADSCALE_DIR/runs/hostfile.$SLURM_JOB_ID}"
    mkdir -p "$(dirname "$HOSTFILE")"
    scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$GPUS_PER_NODE/" > "$HOSTFILE"
    # shellcheck disable=SC2016  # $SLURM_NODEID must expand on each node, not here
    srun --kill-on-bad-exit=1 "${RELAY[@]}" bash -c 'exec deepspeed --hostfile "$0" --no_ssh \
        --node_rank "$SLURM_NODEID" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
        "$1" "${@:2}"' "$HOSTFILE" "$SCRIPT" "${args[@]}" &
    ;;
  torchrun)
    # shellcheck disable=SC2016
    srun --kill-on-bad-exit=1 "${RELAY[@]}" bash -c 'exec torchrun --nnodes "$SLURM_NNODES" \
        --nproc_per_node "$0" --node_rank "$SLURM_NODEID" \
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "$1" "${@:2}"' \
        "$GPUS_PER_NODE" "$SCRIPT" "${args[@]}" &
    ;;
esac
SRUN_PID=$!

while :; do  # wait returns early when a trapped signal arrives; srun still runs then
  status=0
  wait "$SRUN_PID" || status=$?
  kill -0 "$SRUN_PID" 2>/dev/null || break
done

if [[ "$(cat "$AADSCALE_EXIT_DIR/rank0" 2>/dev/null)" == 75 ]]; then
  echo "slurm_train.sh: the run saved on a signal (exit code 75); requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID" || echo "slurm_train.sh: scontrol requeue failed; submit the same command again" >&2
  exit 75
fi
exit "$status"
