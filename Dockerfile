# syntax=docker/dockerfile:1
#
# One image with the floodgate commands in /usr/local/bin:
#   worker, enqueue, smtpsink, floodctl
# docker-compose.yml picks one per service with its entrypoint.
#
#   docker build -t floodgate:local .
#   docker run --rm floodgate:local            # prints worker -h
#   docker run --rm --entrypoint enqueue floodgate:local -h
#
# Every base image is pinned by digest; the tag beside it says what it was.

# The build stage's base is pinned by digest: the golang:1.27.1 image index
# as published on 2026-09-01 (docker-library's repo-info record of the
# golang:1.27.1 tag). The compiler is the patched go1.27.3, the toolchain
# go.mod names: the go command fetches it from the module proxy on the first
# command and checks it against the Go checksum database, so it is pinned as
# firmly as a digest. To move to an image that ships it, replace the line
# below with the digest that
#   docker buildx imagetools inspect golang:1.27.3 --format '{{.Manifest.Digest}}'
# prints, and drop the GOTOOLCHAIN line (internal/deploy checks that the
# image tag or GOTOOLCHAIN matches go.mod's toolchain line).
FROM golang:1.27.1@sha256:512690a5660563b57d37ecc31129e7f136e831db2aed24a1dbeb8ad7380dc0fa AS build
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /src
# Module downloads are cached in their own layer, so editing code does not
# refetch dependencies.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static binaries: distroless/static has no libc.
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/worker ./cmd/enqueue ./cmd/smtpsink ./cmd/floodctl

# The compose healthchecks run wget inside the containers; distroless has no
# shell or wget, so take busybox's statically linked build (musl variant) and
# install it under the applet name, which busybox dispatches on.
# busybox:1.37-musl as published on 2026-07-31.
FROM busybox:1.37-musl@sha256:1256f55742579badea94e3e2f574fc90021120f6c1aa01c87182566dfb950c39 AS busybox

# distroless/static-debian12:nonroot as published on 2026-08-26; refresh with
#   crane digest gcr.io/distroless/static-debian12:nonroot
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=busybox /bin/busybox /usr/local/bin/wget
COPY --from=build /out/worker /out/enqueue /out/smtpsink /out/floodctl /usr/local/bin/
# 65532 is distroless's "nonroot" user; numeric so that Kubernetes'
# runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["-h"]
