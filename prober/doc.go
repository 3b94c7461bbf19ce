// Package prober runs llama_exporter's probe sessions: one per (module,
// target) that Prometheus names on /probe, each probing its target in the
// background every interval and summarising the last window for scrapes.
//
// A module's pool owns its flow sockets (one per flow and address family,
// shared by every session of the module); one scheduler per process sends
// every due session's probe in rounds; each flow socket's receive loop
// decodes replies with the module's Protocol, matches them to their session
// by (address, SSID) and the session's ring of probe slots by sequence
// number. Probe protocols (stamp, llama, icmp, tcp) are one file each,
// registered in Probers.
//
// docs/architecture.md in the repository follows a probe from the
// scheduler to the scrape, with file and function names, explains how to
// add a protocol, and lists the invariants with the tests that hold them.
package prober
