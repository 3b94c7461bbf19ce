// Package metricdef is where every metric family of the exporter is
// defined, name and type together: the packages that serve a family make
// its descriptor or its collector's name here when they are initialised,
// so that All lists what the exporter can serve, and the tests compare
// that list with the README's Metrics tables, the dashboards and the
// rules.
package metricdef

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Type is a metric family's type, as the exposition's TYPE line names it.
type Type string

// The types of metric families the exporter serves.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
	Summary   Type = "summary"
)

// Family is one metric family: its name and type.
type Family struct {
	Name string
	Type Type
}

var (
	mu  sync.Mutex
	all = map[string]Type{}
)

// Name records the family name of type typ and returns name, for the
// options of client_golang's own collectors (prometheus.GaugeOpts.Name).
// A name recorded twice must keep its type; otherwise Name panics, at
// initialisation, as prometheus.MustRegister would at start.
func Name(typ Type, name string) string {
	mu.Lock()
	defer mu.Unlock()
	if t, ok := all[name]; ok && t != typ {
		panic("metricdef: " + name + " defined as " + string(t) + " and " + string(typ))
	}
	all[name] = typ
	return name
}

// Desc records the family name of type typ and returns its descriptor,
// as prometheus.NewDesc does with the same arguments.
func Desc(typ Type, name, help string, labels []string, constLabels prometheus.Labels) *prometheus.Desc {
	return prometheus.NewDesc(Name(typ, name), help, labels, constLabels)
}

// All returns every family recorded so far, by name. The families of a
// package are recorded once it is imported (initialised).
func All() []Family {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Family, 0, len(all))
	for n, t := range all {
		out = append(out, Family{n, t})
	}
	slices.SortFunc(out, func(a, b Family) int { return strings.Compare(a.Name, b.Name) })
	return out
}
