"""Data: a manifest of a folder of clips, the VAE latent cache, and packed training batches.

    index_folder("footage/", "manifest.jsonl")                       # kinema data index
    caption_manifest("manifest.jsonl", kinema.llm.connect(SPEC))      # kinema data caption
    encode_manifest("manifest.jsonl", "latents/", vae)               # kinema data encode
    data = ShardDataset("latents/", token_budget=4096)               # or WorldStream(vae, 4096)
    batches = data.next_batches(8)                                   # this rank's packed sequences
"""

from kinema.data.caption import CaptionOptions, caption_manifest
from kinema.data.cache import EncodeOptions, encode_manifest, prepare_clip, write_index, write_shard
from kinema.data.loader import Batch, PackedSequences, ShardDataset, WorldStream, seeded, world_captions
from kinema.data.manifest import index_folder, read_manifest

__all__ = [
    "Batch",
    "CaptionOptions",
    "EncodeOptions",
    "PackedSequences",
    "ShardDataset",
    "WorldStream",
    "caption_manifest",
    "encode_manifest",
    "index_folder",
    "prepare_clip",
    "read_manifest",
    "seeded",
    "world_captions",
    "write_index",
    "write_shard",
]
