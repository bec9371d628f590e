#!/usr/bin/env bash
# One prepared command for a GPU session (issue 23): at most 10 minutes on an H100-class GPU,
# data carried with it at most 64 MiB (MNIST is 12 MiB; speed.py also reads the CIFAR-10 subset,
# 27 MiB). Two parts, each writing its JSON as it goes, so a cut-off run still leaves results:
#
#   1. benchmarks/speed.py --device cuda: seconds, FLOPs and the fraction of the GPU's fp32
#      ceiling per distillation iteration (dm, datadam, dc, dsa, mtt on MNIST and CIFAR-10 at
#      IPC 10, paper settings), and the evaluation sequential vs stacked, torch.compile,
#      channels-last and bf16 (-> $OUT/speed_gpu.json), capped at $SPEED_SECONDS (default 240 s);
#   2. the paper-protocol DM row, MNIST IPC 10 with the paper preset (20,000 iterations at
#      batch_real 256, then 5 evaluation runs of 1,000 epochs), benchmarks/paper_protocol.py --gpu
#      (-> $OUT/paper_protocol_gpu.json), capped at $DM_SECONDS (default 300 s). It checkpoints
#      every 500 iterations into runs/paper_protocol/dm-mnist-ipc10-digits, copied to
#      $OUT/runs/ at the end: carry that folder and the JSON back to a later GPU call and it
#      resumes (--resume) where it was cut off.
#
# Data: the device machine sees only the checkout and what is carried with it, so copy the data
# into an ignored folder first, e.g. `mkdir -p data_local && cp -r ../shared/data/mnist
# ../shared/data/cifar10 data_local/` (39 MiB), carry data_local and pass --data-root data_local.
# A second call after a cut-off DM row: carry runs/paper_protocol (from $OUT/runs) and put
# $OUT/paper_protocol_gpu.json back where OUT points, then `--part dm` resumes it.
#
# Usage:  OUT=/some/dir benchmarks/gpu.sh [--data-root DIR] [--part speed|dm]  (default: both parts;
#                                                               default OUT: benchmarks/results)
#         benchmarks/gpu.sh --dry-run                           (CPU, seconds: the same commands on
#                                                               tiny sizes and the embedded mnist-5k;
#                                                               writes to $OUT or a temporary folder)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DRY=0
PART=all
DATA=${DATADISTILL_DATA:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --data-root) DATA="${2:?--data-root needs a folder}"; shift ;;
    --part) PART="${2:-}"; shift
            case "$PART" in speed|dm) ;; *) echo "error: --part takes speed or dm, got '$PART'" >&2; exit 2 ;; esac ;;
    *) echo "error: unknown argument $1 (use --dry-run, --data-root DIR or --part speed|dm)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$DATA" ]; then
  if [ -d shared/data ]; then DATA=shared/data; else DATA=../shared/data; fi
fi
if [ "$DRY" = 1 ]; then
  DEST=${OUT:-$(mktemp -d)}
else
  DEST=${OUT:-benchmarks/results}
fi
mkdir -p "$DEST"
status=0
stamp() { date -u +%H:%M:%S; }

if [ "$DRY" = 1 ]; then
  SPEED_ARGS=(--quick --methods dm --datasets mnist-5k --iters 1 --no-eval --device cpu)
  DM_ARGS=(--gpu --smoke --dataset mnist-5k)
else
  [ -d "$DATA/mnist" ] || { echo "error: no MNIST under $DATA (--data-root DIR)" >&2; exit 2; }
  SPEED_ARGS=(--device cuda)
  [ -d "$DATA/cifar10" ] || { echo "note: no cifar10 under $DATA: speed.py measures MNIST only" >&2; SPEED_ARGS+=(--datasets mnist); }
  DM_ARGS=(--gpu --resume)
fi

# timeout signals the command's whole process group, so a row's worker process stops with it
if [ "$PART" != dm ]; then
  echo "[$(stamp)] part 1: speed.py ${SPEED_ARGS[*]}" >&2
  timeout "${SPEED_SECONDS:-240}" "$PY" benchmarks/speed.py "${SPEED_ARGS[@]}" --data-root "$DATA" \
    --out "$DEST/speed_gpu.json" || { echo "[$(stamp)] part 1 ended with status $?" >&2; status=1; }
fi
if [ "$PART" != speed ]; then
  echo "[$(stamp)] part 2: paper_protocol.py ${DM_ARGS[*]}" >&2
  timeout "${DM_SECONDS:-300}" "$PY" benchmarks/paper_protocol.py "${DM_ARGS[@]}" --data-root "$DATA" \
    --out "$DEST/paper_protocol_gpu.json" || { echo "[$(stamp)] part 2 ended with status $?" >&2; status=1; }
fi
if [ "$DRY" = 0 ] && [ -d runs/paper_protocol ]; then
  mkdir -p "$DEST/runs/paper_protocol" && cp -r runs/paper_protocol/dm-* "$DEST/runs/paper_protocol/" 2>/dev/null
fi
echo "[$(stamp)] results in $DEST" >&2
exit $status
