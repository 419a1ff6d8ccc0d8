"""Stand-ins for what CI has no GPU, weights or network for: a `vllm` package whose `serve` runs a
small OpenAI-compatible server, a PEP 503 index serving it, Ollama, and nvidia-smi."""
