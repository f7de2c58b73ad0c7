"""Open model families in Kinema: loaders from outside layouts onto Kinema's own modules.

    hf.py    reading Hugging Face style folders: config.json, safetensors (sharded or not)
    wan.py   a diffusers Wan 2.1 folder (model_index.json) -> DiT, VAE, umT5 text encoder
"""
