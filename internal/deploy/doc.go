// Package deploy holds no code: its tests check the local-stack files at the
// repository root (docker-compose.yml, Dockerfile, .dockerignore) against the
// repository itself, so that a renamed command, a dropped healthcheck or a
// port published beyond loopback fails `go test` without a Docker engine.
// They also hold the repository's other promises about its files and
// commands: the toolchain named in go.mod is the one the image and .ci/run
// build with, and every command answers -h with exit status 0 and a usage
// naming each environment variable it reads.
package deploy
