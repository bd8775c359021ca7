package worker_test

import (
	"io"
	"strings"
)

func copyAll(dst *strings.Builder, src io.Reader) (int64, error) { return io.Copy(dst, src) }
