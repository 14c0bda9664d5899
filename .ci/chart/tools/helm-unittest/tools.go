//go:build tools

// Package tools pins helm-unittest's command for `go build`.
package tools

import _ "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"
