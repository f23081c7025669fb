# Toolgate: slim, non-root, read-only-root friendly.
#   docker build -t toolgate .
#   docker run --read-only --tmpfs /tmp -p 8501:8501 \
#     -v $PWD/deploy-config:/config:ro -v toolgate-audit:/var/lib/toolgate/audit \
#     -e GATEWAY_SERVER_HOST=0.0.0.0 toolgate
# The config folder holds gateway.toml, users.toml, policies/ and secrets/ (0600).
# Only the audit folder (and /tmp) must be writable.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY tools_ui ./tools_ui
# The starting policies ship inside the package (gateway.shipped_policies), for `gateway init`.
COPY policies ./policies
RUN python -m venv /opt/toolgate && /opt/toolgate/bin/pip install --no-compile .

FROM python:3.11-slim
ENV PATH=/opt/toolgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/config/gateway.toml \
    HOME=/tmp
RUN groupadd --system --gid 10001 toolgate \
 && useradd --system --uid 10001 --gid toolgate --home-dir /nonexistent --shell /usr/sbin/nologin toolgate \
 && mkdir -p /var/lib/toolgate/audit /config \
 && chown toolgate:toolgate /var/lib/toolgate/audit
COPY --from=build /opt/toolgate /opt/toolgate
WORKDIR /app
USER toolgate
EXPOSE 8501
# Probes with the configured port, scheme and a Host from server.trusted_hosts:
# a fixed http://127.0.0.1:8501 would be refused by a deployment that serves
# only its public name.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["gateway", "healthcheck", "--timeout", "3"]
ENTRYPOINT ["gateway"]
CMD ["run"]
