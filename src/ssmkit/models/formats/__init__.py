"""Checkpoint formats that ``ssmkit.load_pretrained`` reads (and, where the mapping is exact,
``export_pretrained`` writes): one module per format, ``common`` for what they share.

- ``ssmkit_format``: ssmkit's own config.json + model.safetensors (``save_pretrained``);
- ``mamba``: Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` and the original mamba_ssm;
- ``recurrent_gemma``: Hugging Face ``RecurrentGemmaForCausalLM`` (read and written);
- ``fla`` (with ``fla_layers``): flash-linear-attention's causal LMs of GLA, DeltaNet, Gated
  DeltaNet, HGRN2, RWKV-6 and RetNet (read; GLA, DeltaNet and Gated DeltaNet written);
- ``s4``: state-spaces/s4's standalone S4D sequence models (``example.py``).
What each maps, refuses and why: docs/interop.md.
"""
