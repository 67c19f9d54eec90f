#!/usr/bin/env bash
# Adversarial training on a SLURM cluster: one launcher per node (srun), 8 GPUs per node.
#   sbatch launchers/slurm_train.sh --preset imagenet-resnet50 --data /datasets/imagenet --name r50-aad
#   LAUNCHER=torchrun sbatch --nodes 4 launchers/slurm_train.sh --preset ... train.zero_stage=2
# Arguments go to launchers/train_imagenet.py (or $AADSCALE_SCRIPT) unchanged. Resubmitting with `--resume auto`
# and the same --name continues from the run's latest checkpoint (after a lost node, too).
#SBATCH --job-name=aadscale
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --mem=0
#SBATCH --time=48:00:00
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

LAUNCHER="${LAUNCHER:-deepspeed}"              # deepspeed | torchrun
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

case "$LAUNCHER" in
  deepspeed)
    # The DeepSpeed launcher reads the node list from a hostfile; --no_ssh starts it on
    # every node through srun instead of pdsh.
    # On a file system every node sees (each node's launcher reads it).
    HOSTFILE="${HOSTFILE:-$AADSCALE_DIR/runs/hostfile.$SLURM_JOB_ID}"
    mkdir -p "$(dirname "$HOSTFILE")"
    scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$GPUS_PER_NODE/" > "$HOSTFILE"
    # shellcheck disable=SC2016  # $SLURM_NODEID must expand on each node, not here
    srun --kill-on-bad-exit=1 bash -c 'exec deepspeed --hostfile "$0" --no_ssh \
        --node_rank "$SLURM_NODEID" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
        "$1" "${@:2}"' "$HOSTFILE" "$SCRIPT" "$@"
    ;;
  torchrun)
    # shellcheck disable=SC2016
    srun --kill-on-bad-exit=1 bash -c 'exec torchrun --nnodes "$SLURM_NNODES" \
        --nproc_per_node "$0" --node_rank "$SLURM_NODEID" \
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "$1" "${@:2}"' \
        "$GPUS_PER_NODE" "$SCRIPT" "$@"
    ;;
  *)
    echo "slurm_train.sh: LAUNCHER=$LAUNCHER must be deepspeed or torchrun" >&2
    exit 2
    ;;
esac
