"""Phase 3, AI services: vLLM in place of Ollama on the inference host (Whisper, embeddings, Redis).

    pyinfra -y inventories/hel1.py deploys/phase3.py --limit gpu
"""

from pyinfra import host

from brainall_ops.inference.deploy import inference_services, serves_inference

if serves_inference(host.data):
    inference_services()
