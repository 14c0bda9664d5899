# syntax=docker/dockerfile:1
# Multi-stage build: a static binary in a minimal, non-root runtime image.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t hubnode .
# The build stage runs on the builder's platform and cross-compiles, so
# `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/hubnode ./cmd/hubnode

# distroless static, nonroot (uid/gid 65532): no shell, no package manager.
# `hubnode healthcheck` stands in for curl in health checks.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="hubnode" \
      org.opencontainers.image.description="Real-time Socket.IO node of the Multi-Platform Messaging Hub" \
      org.opencontainers.image.source="https://github.com/messaging-hub/hubnode" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/hubnode /usr/local/bin/hubnode
USER 65532:65532
ENV PORT=3000
EXPOSE 3000
# SIGTERM starts the graceful drain (README, "Shutdown").
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["hubnode", "healthcheck"]
ENTRYPOINT ["hubnode"]
