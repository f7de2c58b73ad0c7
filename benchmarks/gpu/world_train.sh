#!/usr/bin/env bash
# Train the world weights on one GPU machine: three runs side by side, started from the shipped ones.
#   vae_full  the world VAE, encoder and decoder (reconstruction; a DiT must follow its new latents)
#   vae_dec   the world VAE's decoder only (the latents, and the shipped DiT, stay valid)
#   dit       the world DiT, on world-vae latents (12000 clips rendered by 6 processes, encoded once)
# Usage: benchmarks/gpu/world_train.sh RUNS [DIT_STEPS]; each run logs to RUNS/NAME.log and
# checkpoints often, so it can be stopped at any time and exported with `--export-only`
# (benchmarks/gpu/world_finish.sh does that, packs the DiT and prints the VAE figures).
set -euo pipefail
RUNS=${1:?usage: world_train.sh RUNS [DIT_STEPS]}
DIT_STEPS=${2:-20000}
mkdir -p "$RUNS"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
K=(python3 -m kinema.cli)
SIZES=64x64,96x64,64x96,128x128,160x96,96x160,128x80,80x128
VAE=(--init world-vae --batch 16 --frames 1,9,17 --sizes "$SIZES" --ckpt-every 250)

"${K[@]}" train vae "$RUNS/vae_full" "${VAE[@]}" --steps 6000 --lr 2e-4 --workers 5 >"$RUNS/vae_full.log" 2>&1 &
"${K[@]}" train vae "$RUNS/vae_dec" "${VAE[@]}" --steps 6000 --lr 2e-4 --workers 4 --freeze-encoder >"$RUNS/vae_dec.log" 2>&1 &
"${K[@]}" train dit "$RUNS/dit" --set vae=world-vae --set init=src/kinema/weights/world \
  --set shift_scale=12 --set plain_shift_prob=0.5 --set token_budget=4096 --set sequences_per_step=4 --set lr=5e-4 --set warmup=200 \
  --set steps="$DIT_STEPS" --set checkpoint_every=500 --set world_min_side=64 --set world_max_side=160 \
  --set world_min_seconds=1 --set world_max_seconds=3 --set world_image_prob=0.1 --set world_clips=12000 \
  --set world_cache=true --set world_workers=6 \
  --set 'condition_probs={"none":0.6,"first_frame":0.15,"first_k":0.08,"last_k":0.08,"first_last":0.05,"random":0.04}' \
  >"$RUNS/dit.log" 2>&1 &
wait
