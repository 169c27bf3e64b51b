"""The Disco Diffusion engine: plain PyTorch, no Jina."""
