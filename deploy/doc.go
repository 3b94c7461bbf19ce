// Package deploy holds deployment material for llama_exporter: the Grafana
// dashboard, Prometheus rules and their unit tests, and Prometheus, file_sd,
// Kubernetes and Consul examples (see README.md in this directory).
//
// It has no Go code besides this comment; its tests check the material:
// that every YAML file in the repository parses, that every Prometheus
// configuration passes promtool check config, that the rules pass promtool
// check rules and promtool test rules, and that the dashboard's PromQL
// parses and only uses metric names the exporter or the rules provide.
// Tests that need promtool skip without it, except with CI=true in the
// environment, where they fail.
package deploy
