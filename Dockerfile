# Multi-stage build: a static binary in a minimal, non-root runtime image.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t hubnode .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/hubnode ./cmd/hubnode

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hubnode /usr/local/bin/hubnode
USER nonroot:nonroot
ENV PORT=3000
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["hubnode", "healthcheck"]
ENTRYPOINT ["hubnode"]
