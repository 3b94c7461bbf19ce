// Command llama-filesd writes Prometheus file_sd files for a full
// llama_exporter mesh: from a list of hosts it makes one scrape target per
// (source, destination) pair, so that Prometheus asks the exporter on the
// source host to probe the reflector on the destination host.
//
// Input (--hosts.file, YAML, unknown keys refused):
//
//	hosts:
//	  - name: web-1                 # [A-Za-z0-9][A-Za-z0-9._-]*, unique
//	    address: 198.18.0.2         # reflector: host, host:port, [v6]:port, v6
//	    exporter: 198.18.0.2:5200   # optional; default address host + --exporter.port
//	    role: both                  # optional: both | source | destination
//	    module: default             # optional; module used to probe this host
//	    labels: {dc: dc1, rack: r12}
//	    representative: true        # optional; see --mesh.group-label
//
// Every pair is one target group whose target is the destination's address
// and whose labels are source, destination, src_<label> and dst_<label> for
// the two hosts' labels, __tmp_llama_exporter (the source's exporter, which
// the scrape config moves to __address__) and __param_module when a module is
// set. deploy/file_sd/prometheus.yml is the matching scrape config.
//
// With --mesh.group-label=rack the mesh is thinned for large fleets: hosts
// of the same rack probe each other, and between racks only the hosts marked
// representative do (docs/running-at-scale.md).
//
// --output.file writes every pair into one file (a central or sharded
// Prometheus); --output.dir writes llama_<source>.json per source (a
// Prometheus per host or per group reads only its own) and removes the
// llama_*.json files of sources no longer listed; --output.exporters-file
// lists the exporters themselves, for the job that scrapes /metrics. Files
// are replaced atomically and left alone when unchanged.
package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"
)

const name = "llama-filesd"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it parses args, writes the files and
// returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	f, exit, err := parseFlags(args, stdout, stderr)
	if exit >= 0 { // --help or --version
		return exit
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if f.outFile == "" && f.outDir == "" {
		fmt.Fprintf(stderr, "%s: one of --output.file and --output.dir is required\n", name)
		return 2
	}
	list, err := LoadHosts(f.hostsFile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	if f.groupLabel != "" {
		if err := checkGroupLabel(list, f.groupLabel, stderr); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
	}
	m := Build(list, Options{ExporterPort: int(f.exporterPort), ReflectorPort: int(f.reflectorPort), Module: f.module, GroupLabel: f.groupLabel})
	pairs := len(m.All())
	if err := cmp.Or(f.write(m, stdout), f.writeDevices(list, stdout)); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(stdout, "%d hosts, %d sources, %d pairs\n", len(list.Hosts), len(m.Sources), pairs)
	return 0
}

// flags is the parsed command line.
type flags struct {
	hostsFile     string
	outFile       string
	outDir        string
	exportersFile string
	devicesRules  string
	format        string
	exporterPort  uint16
	reflectorPort uint16
	module        string
	groupLabel    string
}

// parseFlags parses args. exit is the exit code when --help or --version
// has printed its text to stdout, -1 otherwise; errors go to stderr.
func parseFlags(args []string, stdout, stderr io.Writer) (f *flags, exit int, err error) {
	app := kingpin.New(name, "Write Prometheus file_sd files for a full llama_exporter mesh.")
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	app.Version(version.Print(name))
	f = &flags{}
	app.Flag("hosts.file", "YAML list of hosts (name, address, exporter, role, module, labels).").Required().StringVar(&f.hostsFile)
	app.Flag("output.file", "Write every pair into this file.").StringVar(&f.outFile)
	app.Flag("output.dir", "Write one llama_<source> file per source into this directory, and remove those of sources no longer listed.").StringVar(&f.outDir)
	app.Flag("output.exporters-file", "Also write the exporters themselves (for the job scraping /metrics) into this file.").StringVar(&f.exportersFile)
	app.Flag("output.devices-rules", "Also write a Prometheus rule file naming every host's and device's address (llama_device_info), for the fleet rules' link names.").StringVar(&f.devicesRules)
	app.Flag("output.format", "File format: json or yaml.").Default("json").EnumVar(&f.format, "json", "yaml")
	app.Flag("exporter.port", "Port of llama_exporter on hosts that name no exporter address.").Default("5200").Uint16Var(&f.exporterPort)
	app.Flag("reflector.port", "Port appended to host addresses that have none; 0 leaves them as they are (the module's port applies).").Default("0").Uint16Var(&f.reflectorPort)
	app.Flag("module", "Module for hosts that name none; empty: the exporter's default module.").StringVar(&f.module)
	app.Flag("mesh.group-label", "Thin the mesh: full mesh among hosts with the same value of this label, and between groups only among hosts marked representative.").StringVar(&f.groupLabel)
	exit = -1
	app.Terminate(func(code int) { exit = code })
	_, err = app.Parse(args)
	return f, exit, err
}

// checkGroupLabel checks the groups that label makes of list's hosts, and
// warns on stderr about those without a representative: they are probed
// only from inside.
func checkGroupLabel(list *HostList, label string, stderr io.Writer) error {
	isolated, err := CheckGroups(list, label)
	if err != nil {
		return err
	}
	if len(isolated) > 0 {
		fmt.Fprintf(stderr, "%s: warning: no representative in %s %v: probed only from inside\n", name, label, isolated)
	}
	return nil
}

// write writes the files that f asks for, of the mesh m: every pair into
// --output.file, one file per source into --output.dir, and the exporters
// into --output.exporters-file. Each file changed is named on stdout.
func (f *flags) write(m *Mesh, stdout io.Writer) error {
	if f.outFile != "" {
		if err := writeGroups(f.outFile, f.format, m.All(), stdout); err != nil {
			return err
		}
	}
	if f.outDir != "" {
		changed, err := writeDir(f.outDir, f.format, m)
		for _, c := range changed {
			fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(f.outDir, c))
		}
		if err != nil {
			return err
		}
	}
	if f.exportersFile != "" {
		return writeGroups(f.exportersFile, f.format, m.Exporters, stdout)
	}
	return nil
}

// writeDevices writes the device rule file, when asked for.
func (f *flags) writeDevices(list *HostList, stdout io.Writer) error {
	if f.devicesRules == "" {
		return nil
	}
	data, err := DeviceRules(list)
	if err != nil {
		return err
	}
	wrote, err := writeFile(f.devicesRules, data)
	if wrote {
		fmt.Fprintf(stdout, "wrote %s\n", f.devicesRules)
	}
	return err
}

func writeGroups(path, format string, groups []TargetGroup, stdout io.Writer) error {
	data, err := Encode(groups, format)
	if err != nil {
		return err
	}
	wrote, err := writeFile(path, data)
	if err != nil {
		return err
	}
	if wrote {
		fmt.Fprintf(stdout, "wrote %s\n", path)
	}
	return nil
}
