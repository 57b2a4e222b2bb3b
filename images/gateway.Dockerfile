# The routing gateway's image, the docker runtime's default `runtime.docker.gateway_image`.
#
#   docker build -f images/gateway.Dockerfile -t expert-deploy/gateway:latest .
#
# The runtime runs `python3 -m router_service --config <rendered gateway.yaml>` in it, with host
# networking and the config and router artifact bind-mounted read-only
# (expert_deploy/runtime/docker_launcher.py), and checks health with python3 as well.
# BASE is any image with Python >= 3.11 and its venv module (Debian: python3, python3-venv).
ARG BASE=python:3.11-slim
FROM ${BASE}

COPY pyproject.toml README.md /src/
COPY expert_deploy /src/expert_deploy
COPY router_service /src/router_service
# One virtualenv, first on PATH: the runtime calls plain `python3`.
RUN python3 -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir "/src[router]" \
    && rm -rf /src
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
# The gateway needs no privileges: nobody, read-only mounts, ports above 1024.
USER 65534:65534
CMD ["python3", "-m", "router_service", "--help"]
