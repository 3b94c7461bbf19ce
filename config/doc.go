// Package config loads, validates and serves the llama_exporter
// configuration file.
//
// The file holds named modules, each describing how to probe a target
// (prober type, probe interval, timeout, number of flows, packet size and
// so on):
//
//	modules:
//	  default:
//	    prober: stamp
//	    interval: 100ms
//	    flows: 8
//	  llama_legacy:
//	    prober: llama
//
// Decoding is strict: unknown fields, duplicate keys, values of the wrong
// type and values out of range are errors. Every error names the field path
// and the YAML line it was found on, for example
//
//	line 7: modules.default.flows: must be at least 1, got 0
//
// Fields left out of a module (or given as null) get the defaults of
// [DefaultModule]; packet_size and port default according to the module's
// prober. YAML anchors, aliases and merge keys ("<<") are supported; a
// mapping has at most one merge key, which merges several mappings as a
// sequence ("<<: [*a, *b]").
//
// [SafeConfig] holds the running configuration, replaces it atomically on
// [SafeConfig.Reload] and exports the outcome of the last reload as
// Prometheus gauges.
package config
