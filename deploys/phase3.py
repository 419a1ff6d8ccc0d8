"""Phase 3, AI services: vLLM in place of Ollama on the inference host (Whisper, embeddings, Redis).

Run: `pyinfra -y inventories/hel1.py deploys/phase3.py --limit gpu` (the Redis password from
$BRAINALL_INFERENCE_REDIS_PASSWORD or $BRAINALL_INFERENCE_REDIS_PASSWORD_FILE).
"""

from pyinfra import host

from brainall_ops.inference.deploy import inference_services, serves_inference

if serves_inference(host.data):
    inference_services()
