# CUDA PyTorch runtime base (no compilers); the project's pinned dependencies on top (requirement.txt pins
# torch 2.14.1, which replaces the base image's torch when they differ).
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLCONFIGDIR=/tmp/matplotlib
COPY requirement.txt /tmp/requirement.txt
RUN pip install -r /tmp/requirement.txt \
 && pip install --no-deps facenet-pytorch==2.6.0 \
 && rm -rf /tmp/requirement.txt /root/.cache

# Run as an ordinary user; match your host ids (docker compose build --build-arg UID=$(id -u) ...) so that
# files written to the mounted repository and data stay yours.
ARG UID=1000
ARG GID=1000
RUN groupadd -g "${GID}" app && useradd -m -u "${UID}" -g "${GID}" app
USER app
WORKDIR /workspace
CMD ["bash"]
