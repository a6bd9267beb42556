# syntax=docker/dockerfile:1
#
# safetyamp-sync: the daemon (`python main.py`, Flask served by waitress on PORT 8080) and
# the one-shot CLI (`python sync_batch.py`, run by the CronJob) in one image.
#
# Three stages, so that nothing used only to build ends up in the image that runs:
#   msrepo   fetches Microsoft's repository-configuration package (needs curl);
#   builder  installs the pinned requirements into /opt/venv (compilers available in
#            case a wheel is missing for the target platform);
#   runtime  python:3.11-slim-bookworm + ODBC Driver 18 + /opt/venv + the code, run as
#            uid 10001. No compiler, no curl, no apt lists, no pip cache, no secrets:
#            every secret comes at run time (Key Vault through workload identity, or
#            files in SECRETS_DIR).
#
# Build:  docker build -t <registry>/safetyamp-sync:<tag> .
# Run:    docker run --rm -p 8080:8080 --read-only --tmpfs /tmp \
#           -v sync-output:/app/output <registry>/safetyamp-sync:<tag> python main.py --sandbox
#
# The base image is pinned by digest: the tag says what it is (Python 3.11 on Debian 12
# "bookworm"), the digest which build of it, so a rebuild uses exactly the same base. The
# tag alone moves every few weeks (Python patch releases, Debian security updates). The
# digest below is the multi-platform index of python:3.11-slim-bookworm (Python 3.11.16,
# built 2026-08-25) as recorded by docker-library/repo-info
# (repos/python/remote/3.11-slim-bookworm.md, commit bc9bbb47). Moving the pin, and
# checking a digest before trusting it: docs/deploy.md, "Image pins".
# .ci/deploy-checks fails if a FROM is not pinned by digest.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:fe556eaffd0d96abd8685b83bb8a69addd0dc730fa193669a7df0d49ddcfac02

# --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS msrepo
# Microsoft's documented way for Debian: install packages-microsoft-prod.deb for the
# Debian major version (12), then `ACCEPT_EULA=Y apt-get install msodbcsql18`. The .deb
# carries the repository list and Microsoft's signing key. It is fetched here so curl
# never reaches the runtime image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /packages-microsoft-prod.deb \
      https://packages.microsoft.com/config/debian/12/packages-microsoft-prod.deb \
 && rm -rf /var/lib/apt/lists/*

# --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# gcc and the unixODBC headers only matter if pyodbc (or another package) has no wheel for
# the build platform; they stay in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ unixodbc-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
# requirements.txt pins every runtime dependency (==); nothing else is installed.
RUN pip install --no-cache-dir -r /tmp/requirements.txt

# --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="safetyamp-sync" \
      org.opencontainers.image.description="Keeps SafetyAmp and SCIM targets true to Viewpoint Vista, Microsoft Graph, Samsara and OneRoster."

# ODBC Driver 18 for SQL Server exactly as Microsoft documents it for Debian (it pulls
# unixODBC and registers itself in /etc/odbcinst.ini); libgssapi-krb5-2 is the Kerberos
# library Microsoft lists as an extra for slim Debian images; tini forwards SIGTERM to
# Python and reaps children. Debian package versions float within bookworm's security
# updates on purpose (DL3008): pinning them breaks the build whenever Debian replaces a
# version. Python dependencies are pinned in requirements.txt.
COPY --from=msrepo /packages-microsoft-prod.deb /tmp/packages-microsoft-prod.deb
# hadolint ignore=DL3008
RUN dpkg -i /tmp/packages-microsoft-prod.deb \
 && rm /tmp/packages-microsoft-prod.deb \
 && apt-get update \
 && ACCEPT_EULA=Y apt-get install -y --no-install-recommends msodbcsql18 libgssapi-krb5-2 tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && grep -q '^\[ODBC Driver 18 for SQL Server\]' /etc/odbcinst.ini

# A fixed, numeric, unprivileged user: Kubernetes' runAsNonRoot can only verify a
# numeric USER, and the manifests run it as 10001:10001.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PORT=8080 \
    OUTPUT_DIR=/app/output \
    LOG_FORMAT=json

WORKDIR /app
# Code is owned by root and read-only for the app user; only output/ is writable (and in
# Kubernetes an emptyDir is mounted over it, with the root filesystem read-only).
COPY main.py sync_batch.py ./
COPY config/ config/
COPY services/ services/
COPY sync/ sync/
COPY utils/ utils/
COPY console/ console/
COPY sandbox/ sandbox/
RUN python -m compileall -q /app \
 && mkdir -p /app/output/changes /app/output/errors /app/output/logs \
 && chown -R 10001:10001 /app/output

USER 10001:10001
EXPOSE 8080

# Docker/Compose only: Kubernetes ignores HEALTHCHECK and uses the probes on /live and
# /ready. Python, because the image carries no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/live' % os.environ.get('PORT', '8080'), timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "main.py"]
