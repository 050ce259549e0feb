#!/usr/bin/env bash
# Submit the Lumos jobs to a running Ray cluster with `ray job submit` (recipes: cluster/README.md).
#
#   ray dashboard cluster/aws-48gpu.yaml &          # SSH tunnel to the job API on 127.0.0.1:8265
#   export BUCKET=my-bucket                          # runs live under s3://$BUCKET/lumos/...
#   cluster/submit.sh synth                          # 1. a shapes-world corpus      -> raw/<corpus>/
#   cluster/submit.sh train-tokenizer                # 2. the video tokenizer        -> checkpoints/video_tokenizer/
#   cluster/submit.sh tokenize                       # 3. token shards               -> shards/<corpus>/
#   cluster/submit.sh pretrain-1b                    # 4. 1B on 48 GPUs              -> checkpoints/<run>/
#   CHECKPOINT=s3://... cluster/submit.sh eval       # 5. shapes-world benchmarks    -> eval/<run>/
#   CHECKPOINT=s3://... cluster/submit.sh serve      # 6. the HTTP sampler (Ray Serve, detached)
#
# Every job ships this checkout with --working-dir and cluster/runtime_env.yaml. Extra arguments after the
# job name go to the python module (pretrain: key=value overrides). --dry-run prints the command only.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
usage: cluster/submit.sh [--dry-run] [--no-wait] JOB [ARGS...]

JOB: synth | tokenize | train-tokenizer | pretrain-1b | pretrain-3b | eval | generate | serve
ARGS are appended to the job's python command (pretrain: key=value overrides).

environment:
  RAY_ADDRESS   Ray job API (default http://127.0.0.1:8265, the `ray dashboard` SSH tunnel)
  RAY_AUTH_MODE token auth of Ray 2.60 (default token; the token is ~/.ray/auth_token or RAY_AUTH_TOKEN)
  LUMOS_ROOT    storage root of the run (default s3://$BUCKET/lumos); BUCKET or LUMOS_ROOT is required
  CORPUS        corpus name under raw/ and shards/ (default corpus)
  VIDEOS, SEED  synth corpus size and seed (default 2000, 0)
  DECODE_CONCURRENCY, TOKENIZE_CONCURRENCY  tokenize: actor pool MIN,MAX (default 4,448 and 1,16)
  TOKENIZER     video tokenizer URI (default $LUMOS_ROOT/checkpoints/video_tokenizer; empty: the job's default)
  RUN           pre-training run name (default lumos-1b-48gpu / lumos-3b-48gpu)
  CHECKPOINT    checkpoint URI for eval / generate / serve
  PROMPT, OUT   generate: the prompt and the output file (default $LUMOS_ROOT/samples/sample.gif)
  PORT          serve: HTTP port on the head node (default 8000)
  SUBMISSION_ID the job's id (default lumos-JOB-DATE-PID; Ray refuses a second job with the same id)
  RAY           the ray CLI (default ray)
EOF
}

die() { echo "submit.sh: $*" >&2; exit 2; }

DRY_RUN=0
WAIT=1
ENTRYPOINT_OPTS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-wait) WAIT=0; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
JOB="$1"; shift
case "$JOB" in
  synth|tokenize|train-tokenizer|pretrain-1b|pretrain-3b|eval|generate|serve) ;;
  *) die "unknown job '$JOB' (see --help)" ;;
esac

if [[ -z "${LUMOS_ROOT:-}" ]]; then
  [[ -n "${BUCKET:-}" ]] || die "set BUCKET (runs go to s3://\$BUCKET/lumos) or LUMOS_ROOT"
  LUMOS_ROOT="s3://${BUCKET}/lumos"
fi
LUMOS_ROOT="${LUMOS_ROOT%/}"
CORPUS="${CORPUS:-corpus}"
RAW="$LUMOS_ROOT/raw/$CORPUS"
SHARDS="$LUMOS_ROOT/shards/$CORPUS"
TOKENIZER="${TOKENIZER-$LUMOS_ROOT/checkpoints/video_tokenizer}"
CHECKPOINTS="$LUMOS_ROOT/checkpoints"

need_checkpoint() {
  [[ -n "${CHECKPOINT:-}" ]] || die "$JOB needs CHECKPOINT=<checkpoint URI> (a directory under $CHECKPOINTS/)"
}

case "$JOB" in
  synth)
    CMD=(python -m tokenize_jobs.synth --out "$RAW" --videos "${VIDEOS:-2000}" --seed "${SEED:-0}") ;;
  train-tokenizer)
    CMD=(python -m workflows.train_tokenizer --config workflows/configs/tokenizer_cluster.yaml
         "data.manifest=$RAW/manifest.jsonl" "out=$TOKENIZER") ;;
  tokenize)
    # Pool bounds sized for cluster/aws-48gpu.yaml's CPU pool (16 x 32 vCPU): "auto" would size them from the
    # nodes up at submission time, before the autoscaler has added any. Later ARGS override them. Without
    # GPUs the job fuses decoding and tokenizing into one pool (DECODE_CONCURRENCY); with `tokenize --num-gpus 1`
    # the tokenizer runs on GPU actors (TOKENIZE_CONCURRENCY) fed by the decode pool.
    CMD=(python -m tokenize_jobs.video --manifest "$RAW/manifest.jsonl" --out "$SHARDS"
         --decode-concurrency "${DECODE_CONCURRENCY:-4,448}" --tokenize-concurrency "${TOKENIZE_CONCURRENCY:-1,16}")
    # TOKENIZER= (empty) leaves the choice to the job's default tokenizer.
    [[ -z "$TOKENIZER" ]] || CMD+=(--tokenizer "$TOKENIZER") ;;
  pretrain-1b|pretrain-3b)
    SIZE="${JOB#pretrain-}"
    RUN="${RUN:-lumos-${SIZE}-48gpu}"
    CMD=(python -m workflows.pretrain --config "workflows/configs/pretrain_${SIZE}_48gpu.yaml"
         "data.shards=$SHARDS" "checkpoint.storage=$CHECKPOINTS" "checkpoint.name=$RUN") ;;
  eval)
    need_checkpoint
    # The sampler runs in the job's driver process: put the driver on a GPU node (the head has none).
    ENTRYPOINT_OPTS=(--entrypoint-num-gpus 1)
    CMD=(python -m workflows.eval --checkpoint "$CHECKPOINT" --suite all --out "$LUMOS_ROOT/eval/${RUN:-$(basename "$CHECKPOINT")}") ;;
  generate)
    need_checkpoint
    ENTRYPOINT_OPTS=(--entrypoint-num-gpus 1)
    CMD=(python -m workflows.generate --checkpoint "$CHECKPOINT"
         --prompt "${PROMPT:-a red circle moving from left to right}" --out "${OUT:-$LUMOS_ROOT/samples/sample.gif}") ;;
  serve)
    need_checkpoint
    # A long-running job: never wait for it (stop it with `ray job stop <submission id>`).
    WAIT=0
    CMD=(python -m workflows.serve --checkpoint "$CHECKPOINT" --port "${PORT:-8000}") ;;
  *)
    die "unknown job '$JOB' (see --help)" ;;
esac
CMD+=("$@")

SUBMIT=("${RAY:-ray}" job submit
        --address "${RAY_ADDRESS:-http://127.0.0.1:8265}"
        --submission-id "${SUBMISSION_ID:-lumos-${JOB}-$(date +%Y%m%d-%H%M%S)-$$}"
        --working-dir "$REPO"
        --runtime-env "$REPO/cluster/runtime_env.yaml")
SUBMIT+=(${ENTRYPOINT_OPTS[@]+"${ENTRYPOINT_OPTS[@]}"})  # (bash 3.2-safe empty array)
[[ "$WAIT" == 1 ]] || SUBMIT+=(--no-wait)
SUBMIT+=(-- "${CMD[@]}")

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%q ' "${SUBMIT[@]}"; echo
  exit 0
fi
echo "submit.sh: $JOB -> ${RAY_ADDRESS:-http://127.0.0.1:8265} (storage root $LUMOS_ROOT)" >&2
exec "${SUBMIT[@]}"
