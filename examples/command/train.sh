#!/usr/bin/env bash
# A training command in plain shell (bash 5) that speaks runyard's progress protocol
# v1 with printf: progress every batch, a heartbeat while it "validates", an epoch
# summary and a checkpoint (written to a temporary name, then renamed) at every
# epoch's end. SIGTERM (cancel or pause) saves a checkpoint and exits 0; started
# again with RUNYARD_RESUME_FROM set, it goes on from that checkpoint's epoch.
#
# The "training" is a sleep per batch; EPOCHS (5), BATCHES (20) and BATCH_SECONDS
# (0.1) size it. Outside runyard it runs the same, its lines going nowhere. How to
# submit it: examples/command/README.md.
#
# runyard sends SIGTERM to the whole process group, so a program this script runs
# at that moment (sleep, mv) dies of it: the loop does its arithmetic in bash itself
# (no command substitution, whose subshell would die too) and checks each program's
# status instead of `set -e`.
set -uo pipefail

epochs="${EPOCHS:-5}"
batches="${BATCHES:-20}"
batch_seconds="${BATCH_SECONDS:-0.1}"
checkpoint_dir="${RUNYARD_CHECKPOINT_DIR:-./checkpoints}"
mkdir -p "$checkpoint_dir" || exit 1

# The protocol's pipe, or nowhere outside runyard. Each line is one write of a few
# hundred bytes at most: under PIPE_BUF, so lines never interleave.
if [ -n "${RUNYARD_PROGRESS_FD:-}" ]; then
  exec {progress}>&"$RUNYARD_PROGRESS_FD"
else
  exec {progress}>/dev/null
fi
report() { printf '%s\n' "$1" >&"$progress"; }

# SIGTERM only raises a flag: the loop checkpoints at the next batch's end.
stop=0
trap 'stop=1' TERM

# Saves "the next epoch to run" atomically, then reports it (epoch = epochs done).
checkpoint() {
  local next="$1"
  local name="epoch-$((next - 1)).ckpt"
  printf 'next_epoch=%d\n' "$next" >"$checkpoint_dir/.$name.tmp" \
    && mv -f "$checkpoint_dir/.$name.tmp" "$checkpoint_dir/$name" \
    || return 1 # not written whole: not reported; the next one will be
  report "{\"type\":\"checkpoint\",\"path\":\"$name\",\"epoch\":$((next - 1)),\"step\":$(((next - 1) * batches))}"
}

now_ms() { now=${EPOCHREALTIME/./}; now=$((10#$now / 1000)); }

first=1
if [ -n "${RUNYARD_RESUME_FROM:-}" ]; then
  while IFS='=' read -r key value; do
    [ "$key" = next_epoch ] && first="$value"
  done <"$RUNYARD_RESUME_FROM"
  echo "resuming at epoch $first from $RUNYARD_RESUME_FROM"
fi

loss=0
for ((epoch = first; epoch <= epochs; epoch++)); do
  now_ms
  started=$now
  for ((batch = 1; batch <= batches; batch++)); do
    sleep "$batch_seconds"
    if [ "$stop" = 1 ]; then
      echo "SIGTERM: checkpoint at the start of epoch $epoch, then exit"
      checkpoint "$epoch" || exit 1
      exit 0
    fi
    step=$(((epoch - 1) * batches + batch))
    # loss = 2 / (1 + 0.05 step), with four decimals, in integer arithmetic.
    scaled=$((2000000 / (100 + 5 * step)))
    printf -v loss '%d.%04d' $((scaled / 10000)) $((scaled % 10000))
    report "{\"epoch\":$epoch,\"epochs\":$epochs,\"batch\":$batch,\"batches\":$batches,\"loss\":$loss,\"samples\":$((step * 32))}"
  done
  # A long step without batches (validation, say): a heartbeat says it is alive.
  report '{"type":"heartbeat"}'
  now_ms
  report "{\"type\":\"epoch\",\"epoch\":$epoch,\"loss\":$loss,\"duration_ms\":$((now - started))}"
  checkpoint $((epoch + 1))
  echo "epoch $epoch: loss $loss"
done
