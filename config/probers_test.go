package config_test

// The protocols register their defaults and limits with this package when
// the prober package is initialised: link it, as the exporter does, so
// that the tests validate against the real registry.
import _ "github.com/llama-exporter/llama_exporter/prober"
