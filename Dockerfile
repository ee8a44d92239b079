# The ModelGuard image for users with Docker (BuildKit). `make image` builds the reference image
# without Docker or a registry (hack/images.py; see README, "Images"); this file builds its
# equivalent:
#   - the same base release: Debian 12 (bookworm) and its Python 3.11, no shell at run time;
#   - the same Python dependencies: the wheels pinned by hash in hack/image-requirements.txt
#     (resolved for linux/amd64, so build for that platform);
#   - the same project wheel, byte-compiled with unchecked-hash .pyc files by Debian's Python;
#   - the same user (65532:65532, "nonroot") and entrypoint (/usr/local/bin/modelguard, run by
#     /usr/bin/python3.11 -I).
# What differs: the run-time base is distroless's python3-debian12, made from the same Debian
# packages by other tooling, instead of our mmdebstrap tree; so the digest differs from
# `make image`'s. Pin the base by digest when you build for production:
#   docker buildx imagetools inspect gcr.io/distroless/python3-debian12:nonroot
#
#   docker build --platform linux/amd64 -t registry.example/modelguard:0.1.0 .

FROM --platform=linux/amd64 debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ARG SITE=/usr/local/lib/python3.11/dist-packages
WORKDIR /src
COPY hack/image-requirements.txt hack/image-requirements.txt
RUN python3.11 -m pip install --break-system-packages --no-deps --require-hashes \
      --only-binary=:all: --no-compile --target /out${SITE} -r hack/image-requirements.txt
COPY pyproject.toml README.md ./
COPY operator/modelguard operator/modelguard
RUN python3.11 -m pip wheel --no-deps --wheel-dir /wheels . \
 && python3.11 -m pip install --break-system-packages --no-deps --no-compile \
      --target /out${SITE} /wheels/modelguard-*.whl \
 && rm -rf /out${SITE}/bin /out${SITE}/*.dist-info/direct_url.json \
 && python3.11 -m compileall -q --invalidation-mode unchecked-hash -s /out -p / /out${SITE} \
 && mkdir -p /out/usr/local/bin \
 && printf '%s\n' '#!/usr/bin/python3.11 -I' \
      '"""ModelGuard'"'"'s command line: the entrypoint of its image."""' \
      'import sys' '' 'from modelguard import cli' '' 'sys.exit(cli.main())' \
      > /out/usr/local/bin/modelguard \
 && chmod 0755 /out/usr/local/bin/modelguard

FROM --platform=linux/amd64 gcr.io/distroless/python3-debian12:nonroot
COPY --from=build /out/ /
ENV PATH=/usr/local/bin:/usr/bin LANG=C.UTF-8
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/modelguard"]
LABEL org.opencontainers.image.title="ModelGuard" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/modelguard-dev/modelguard"
