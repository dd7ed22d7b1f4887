# CUDA PyTorch base image; the project's pinned Python dependencies on top.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /workspace
COPY requirement.txt /tmp/requirement.txt
RUN pip install -r /tmp/requirement.txt && rm /tmp/requirement.txt

CMD ["bash"]
