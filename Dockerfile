# Shepherd: the webhook server with in-process workers. Keep in step with the Makefile
# (same uv version, same `uv sync --locked`, same system packages as scripts/install-system-deps.sh).
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
# git: mirrors and worktrees; bubblewrap: the sandbox for untrusted PR code;
# nodejs/npm: the bundled node tools (prettier, eslint, pnpm, yarn); golang-go and
# golang-golang-x-tools: gofmt, goimports; cargo, rustfmt: cargo fmt, cargo update;
# curl: the HEALTHCHECK;
# postgresql, redis-server, mariadb-server, socat: a private instance of each `services:` entry of
# a job, started per job from a template (bot/jobenv/services.py), and the forwarders that make it
# reachable in the sandbox. No cluster is created and no server runs at image start.
RUN mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends git bubblewrap nodejs npm curl ca-certificates \
      golang-go golang-golang-x-tools cargo rustfmt \
      postgresql redis-server mariadb-server socat tinyproxy-bin \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir "uv==${UV_VERSION}"

RUN useradd --create-home --uid 10001 shepherd
WORKDIR /app
COPY pyproject.toml uv.lock README.md app.yml ./
COPY bot ./bot
COPY handlers ./handlers
COPY fixers ./fixers
COPY scripts ./scripts
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    SHEPHERD_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
RUN uv sync --locked --no-dev \
 && bash scripts/install-system-deps.sh --no-browser \
 && mkdir -p /data && chown shepherd:shepherd /data

USER shepherd
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# Without GITHUB_* settings and an App in /data, the server prints a setup link (docker logs) and
# registers the App from its page; set SHEPHERD_PUBLIC_URL to where GitHub and browsers reach it.
CMD ["shepherd", "serve", "--host", "0.0.0.0", "--port", "8080"]
