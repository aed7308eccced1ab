"""Triton Inference Server, from both sides of the gRPC connection.

Owns: the dispatcher's aio gRPC client (batched calls, error classification, the model-metadata check),
softmax and top-k over the logits (``topk``), and ``backend.py``, the python-backend runner that serves an
ONNX file inside a Triton that has no onnxruntime backend (copied into model repositories, run by Triton's
python stub, importing nothing of ours).

May import: ``aic.core`` only.
"""
