# reconciler: `docker build -t reconciler:0.1.0 .`; runs `reconciler watch` by default.
# Two stages: the build tools stay in the first, the runtime image holds only the venv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/reconciler
COPY pyproject.toml README.md /src/
COPY reconciler /src/reconciler
RUN /opt/reconciler/bin/pip install /src

FROM python:3.11-slim
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
RUN groupadd --system --gid 10001 reconciler \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin reconciler
COPY --from=build /opt/reconciler /opt/reconciler
ENV PATH=/opt/reconciler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The model files (a ConfigMap, a git-sync checkout or a bind mount) and reconciler.toml.
WORKDIR /etc/reconciler
VOLUME ["/models.d"]
USER 10001:10001
EXPOSE 9180
# Liveness only: /readyz turns 503 while the registry is down, which must not restart us.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9180/healthz', timeout=4); sys.exit(0)"]
ENTRYPOINT ["reconciler"]
CMD ["watch", "--dir", "/models.d", "--listen", ":9180", "--log-format", "json"]
