// Package e2e holds the end-to-end tests of llama_exporter: they build the
// binary from the repository root and run it as a separate process, against
// the real Prometheus server and promtool and across Linux network
// namespaces. It has no non-test code besides this comment.
//
// Tests whose tools are missing (prometheus, promtool, root and iproute2)
// skip with a message, except when the environment variable CI is "true",
// where they fail instead.
package e2e
