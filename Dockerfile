# The agent-nodes container image: the apiserver by default, the nodemanager with another entry point.
#   docker build -t agent-nodes .                                   (BASE_IMAGE: any Debian-like image with
#   docker build --build-arg BASE_IMAGE=my/python:3.11 -t agent-nodes .     python3 3.11+ and its venv module)
# Running it, the nodemanager, the Docker socket and compose: docs/operations.md ("Container image").
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/agent-nodes
WORKDIR /src
# the dependencies first, from pyproject.toml alone: this layer is built again only when it (or the
# version) changes, not with every change of the source or the README (an empty one stands in)
COPY pyproject.toml ./
COPY nodeapi/__init__.py nodeapi/
RUN touch README.md && /opt/agent-nodes/bin/pip install '.[server,node]' \
    && /opt/agent-nodes/bin/pip uninstall --yes agent-nodes
COPY README.md ./
COPY nodeapi nodeapi
COPY server server
COPY nodemanager nodemanager
COPY nodectl nodectl
RUN /opt/agent-nodes/bin/pip install --no-deps . && /opt/agent-nodes/bin/apiserver --version

FROM ${BASE_IMAGE}
ARG UID=10001
RUN groupadd --system --gid ${UID} agentnodes \
    && useradd --system --uid ${UID} --gid agentnodes --home-dir /var/lib/agentnodes \
        --shell /usr/sbin/nologin agentnodes \
    && mkdir -p /var/lib/agentnodes \
    && chown agentnodes:agentnodes /var/lib/agentnodes
COPY --from=build /opt/agent-nodes /opt/agent-nodes
ENV PATH=/opt/agent-nodes/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APISERVER_HOST=0.0.0.0 \
    APISERVER_PORT=8080 \
    APISERVER_DATA_DIR=/var/lib/agentnodes
USER agentnodes
WORKDIR /var/lib/agentnodes
VOLUME ["/var/lib/agentnodes"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/agent-nodes/bin/python", "-m", "server.healthcheck"]
ENTRYPOINT ["/opt/agent-nodes/bin/apiserver"]
