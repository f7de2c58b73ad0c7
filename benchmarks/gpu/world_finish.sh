#!/usr/bin/env bash
# Stop the runs of world_train.sh, export their latest checkpoints, pack the DiT (float16, world-vae)
# and print the VAE figures (held-out world clips) beside the shipped world-vae.
# Usage: benchmarks/gpu/world_finish.sh RUNS OUT   (OUT gets vae_full.tar, vae_dec.tar, world.tar)
set -uo pipefail
RUNS=${1:?usage: world_finish.sh RUNS OUT}; OUT=${2:?usage: world_finish.sh RUNS OUT}
K=(python3 -m kinema.cli)
pkill -f "kinema.cli train" ; sleep 3
for v in vae_full vae_dec; do
  "${K[@]}" train vae "$RUNS/$v" --export-only && tar -C "$RUNS/$v" -cf "$OUT/$v.tar" export
done
"${K[@]}" train dit "$RUNS/dit" --export-only
"${K[@]}" train pack "$RUNS/dit/export" "$RUNS/world" --vae world-vae --default fps=8 --default steps=20 --default guidance=4 \
  && tar -C "$RUNS" -cf "$OUT/world.tar" world
for m in world-vae "$RUNS/vae_full/export" "$RUNS/vae_dec/export"; do
  echo "== $m"; "${K[@]}" eval vae --model "$m" 2>&1 | grep -v "it/s"
done
