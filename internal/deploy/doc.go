// Package deploy holds no code: its tests check the local-stack files at the
// repository root (docker-compose.yml, Dockerfile, .dockerignore) against the
// repository itself, so that a renamed command, a dropped healthcheck or a
// port published beyond loopback fails `go test` without a Docker engine.
package deploy
