# regverify's own image: `docker build -t regverify .`
#   docker run --rm regverify scan registry.example.com          # any command
#   docker run --rm -e PLUGIN_IMAGE=registry.example.com/app:1 regverify   # Woodpecker plugin
# The default command is `plugin`, because Woodpecker runs a plugin image without arguments.

# Build stage: a wheel of regverify and of each dependency, so the final stage needs no
# compiler and keeps no build tools.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY verifier ./verifier
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# A fixed non-root UID/GID, so Kubernetes' runAsNonRoot can check it (examples/kubernetes).
RUN groupadd --system --gid 10001 regverify \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin regverify
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels registry-verifier \
 && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
# `regverify serve` listens here when given --listen 0.0.0.0:9731 (examples/kubernetes/serve.yaml).
EXPOSE 9731
ENTRYPOINT ["regverify"]
CMD ["plugin"]
