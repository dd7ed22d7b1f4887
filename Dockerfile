# The project's image: Python 3.11 and exactly requirement.txt. torch 2.14.1 from PyPI brings its own CUDA 13
# runtime libraries (pip packages), so the base needs no CUDA and holds no second torch; the host's NVIDIA driver
# (>= 580 for CUDA 13) comes in through the NVIDIA container toolkit. Another build: docs/install.md.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLCONFIGDIR=/tmp/matplotlib
# libglib2.0-0 and libgomp1: what OpenCV's headless wheel and the CPU kernels load at run time
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY requirement.txt /tmp/requirement.txt
RUN pip install -r /tmp/requirement.txt \
 && pip install --no-deps facenet-pytorch==2.6.0 \
 && rm -rf /tmp/requirement.txt /root/.cache

# Run as an ordinary user with your host ids, passed explicitly (bash does not export UID):
#   HOST_UID=$(id -u) HOST_GID=$(id -g) docker compose build
ARG HOST_UID=1000
ARG HOST_GID=1000
RUN groupadd -g "${HOST_GID}" app && useradd -m -u "${HOST_UID}" -g "${HOST_GID}" app
USER app
WORKDIR /workspace
CMD ["bash"]
