package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llama-exporter/llama_exporter/internal/testlab"
	"go.yaml.in/yaml/v3"
)

const fabricHosts = `
hosts:
  - name: h1
    address: 198.18.1.1
  - name: h2
    address: 198.18.2.1:862
devices:
  - name: spine1
    interfaces: {eth1: 198.18.100.0/31, eth2: 198.18.100.2/31}
  - name: leaf1
    interfaces: {eth0: 198.18.100.1/31, eth3: 198.18.1.0/31}
  - name: leaf2
    interfaces: {eth0: 198.18.100.3/31, eth3: 198.18.2.0/30}
`

// Every host and device address is named, and a link by both its ends
// where a point-to-point prefix gives the near one.
func TestDeviceRules(t *testing.T) {
	list, err := ParseHosts([]byte(fabricHosts))
	if err != nil {
		t.Fatal(err)
	}
	data, err := DeviceRules(list)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{}
	for _, r := range rf.Groups[0].Rules {
		links[r.Labels["address"]] = r.Labels["link"]
	}
	for addr, want := range map[string]string{
		"198.18.100.1": "spine1:eth1 -> leaf1:eth0",
		"198.18.100.0": "leaf1:eth0 -> spine1:eth1",
		"198.18.100.3": "spine1:eth2 -> leaf2:eth0",
		"198.18.1.1":   "leaf1:eth3 -> h1",
		"198.18.2.1":   "leaf2:eth3 -> h2",
		"198.18.2.0":   "h2 -> leaf2:eth3",
	} {
		if links[addr] != want {
			t.Errorf("link ending at %s: %q, want %q", addr, links[addr], want)
		}
	}
	if len(links) != 8 {
		t.Errorf("%d addresses named, want 8: %v", len(links), links)
	}
	checkRules(t, data)
}

// checkRules runs promtool check rules on a rule file, where promtool is
// installed (and fails without it under CI=true).
func checkRules(t *testing.T, data []byte) {
	promtool := testlab.RequireTool(t, "promtool")
	path := filepath.Join(t.TempDir(), "devices.rules.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

func TestDevicesRefused(t *testing.T) {
	for _, tc := range []struct{ devices, want string }{
		{"devices: [{name: r1, interfaces: {eth0: 198.18.1.1}}]", "devices[0] (r1): interfaces: eth0"},
		{"devices: [{name: r1}, {name: r1}]", `devices[1]: name "r1" appears twice`},
		{"devices: [{name: r1, ports: {}}]", "field ports not found"},
	} {
		_, err := ParseHosts([]byte("hosts: [{name: h1, address: 198.18.1.1}]\n" + tc.devices))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.devices, err, tc.want)
		}
	}
}
