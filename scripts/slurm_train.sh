#!/bin/bash
# Multi-node training under SLURM: one task per GPU, started by srun; Lightning reads the ranks from SLURM's
# environment (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, the node list), so nothing else is launched.
#
#   sbatch scripts/slurm_train.sh                                   # FSDP, paper-wb2 (the defaults below)
#   sbatch --nodes 2 scripts/slurm_train.sh configs/wb2_64x32.yaml configs/scale/ddp.yaml
#   sbatch scripts/slurm_train.sh configs/wb2_240x121.yaml configs/scale/fsdp.yaml --ckpt_path last  # resume
#
# Near the time limit SLURM sends SIGUSR1 (--signal below): Lightning's SLURM environment then saves
# hpc_ckpt_<n>.ckpt under trainer.default_root_dir and requeues the job, and the requeued job resumes from it
# by itself. A job submitted again by hand resumes with `--ckpt_path last` (the newest last.ckpt).
#
# Arguments: the config files to stack (default: configs/wb2_240x121.yaml configs/scale/fsdp.yaml), then any
# `earthcast fit` options. Adjust the #SBATCH lines to your cluster (partition, account, time limit); keep
# --ntasks-per-node equal to --gpus-per-node. Memory per GPU by model size, strategy and GPU count:
# docs/scaling.md (python scripts/plan_memory.py). The store must be readable from every node (a shared file
# system or an object store URL); the statistics cache (~/.cache/earthcast by default) too, or compute it
# once beforehand with `earthcast data stats`.
#SBATCH --job-name=earthcast-fit
#SBATCH --nodes=4
#SBATCH --gpus-per-node=8
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=SIGUSR1@120
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

configs=()
while [[ $# -gt 0 && "$1" != --* ]]; do
    configs+=(--config "$1")
    shift
done
if [[ ${#configs[@]} -eq 0 ]]; then
    configs=(--config configs/wb2_240x121.yaml --config configs/scale/fsdp.yaml)
fi

# One rank per GPU; data workers get the task's CPUs (data.num_workers in the config) and no nested threads.
export OMP_NUM_THREADS=1
# NCCL: report failing collectives instead of hanging; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA for your fabric.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1

srun --kill-on-bad-exit=1 earthcast fit "${configs[@]}" \
    --trainer.num_nodes "${SLURM_JOB_NUM_NODES}" \
    --trainer.devices "${SLURM_NTASKS_PER_NODE}" \
    "$@"
