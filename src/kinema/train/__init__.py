"""Training: one loop for every scale, from one CPU process to FSDP2 on many GPUs."""
