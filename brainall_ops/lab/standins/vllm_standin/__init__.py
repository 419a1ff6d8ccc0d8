"""A stand-in for vLLM in tests: `vllm serve MODEL` runs a small OpenAI-compatible HTTP server
(no GPU, no weights) that answers /health and /v1/models like vLLM's, and can be told to stay
unready. Standard library only: it is installed as a wheel into the deploy's venv."""

__version__ = "0.0.0+standin"
