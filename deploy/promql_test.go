package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The repository does not depend on Prometheus's PromQL parser, so
// expressions are validated by promtool (check rules on a generated rule
// file) and their metric names are found by the small lexer below.

// clauseKeywords are followed by a parenthesised list of label names.
var clauseKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// otherKeywords are PromQL words that are not metric names.
var otherKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
}

// stripQuoted replaces the PromQL string literals in s ("...", '...',
// `...`) with empty ones.
func stripQuoted(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '"' && c != '\'' && c != '`' {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for ; j < len(s) && s[j] != c; j++ {
			if s[j] == '\\' && c != '`' {
				j++
			}
		}
		if j >= len(s) {
			return "", fmt.Errorf("unterminated string at offset %d", i)
		}
		b.WriteString(`""`)
		i = j
	}
	return b.String(), nil
}

// stripBlocks removes the contents of {...} (label matchers) and [...]
// (ranges, subqueries) from s, which has no strings left.
func stripBlocks(s string) (string, error) {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return "", fmt.Errorf("unbalanced %q at offset %d", s[i], i)
			}
		default:
			if depth == 0 {
				b.WriteByte(s[i])
			}
		}
	}
	if depth != 0 {
		return "", fmt.Errorf("unbalanced braces or brackets")
	}
	return b.String(), nil
}

// startsClause reports whether s starts with the word by or without.
func startsClause(s string) bool {
	for _, kw := range []string{"by", "without"} {
		if len(s) >= len(kw) && strings.EqualFold(s[:len(kw)], kw) && (len(s) == len(kw) || !isIdentChar(s[len(kw)])) {
			return true
		}
	}
	return false
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// metricNames returns the metric names an expression selects, sorted and
// without duplicates: identifiers that are not functions, aggregations,
// keywords, label lists or numbers (durations included).
func metricNames(expr string) ([]string, error) {
	s, err := stripQuoted(expr)
	if err != nil {
		return nil, err
	}
	if s, err = stripBlocks(s); err != nil {
		return nil, err
	}
	var names []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c >= '0' && c <= '9' || c == '.':
			// A number or a duration: digits, letters, dots, and a sign
			// after an exponent.
			j := i + 1
			for j < len(s) && (isIdentChar(s[j]) || s[j] == '.' ||
				((s[j] == '+' || s[j] == '-') && (s[j-1] == 'e' || s[j-1] == 'E'))) {
				j++
			}
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r') {
				k++
			}
			next := byte(0)
			if k < len(s) {
				next = s[k]
			}
			lower := strings.ToLower(word)
			switch {
			case clauseKeywords[lower] && next == '(':
				end := strings.IndexByte(s[k:], ')')
				if end < 0 {
					return nil, fmt.Errorf("%s list without ')'", word)
				}
				j = k + end + 1
			case next == '(' || clauseKeywords[lower] || otherKeywords[lower] || startsClause(s[k:]):
				// a function, an aggregation (maybe followed by its by or
				// without clause) or a keyword
			default:
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

func TestMetricNamesLexer(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`llama_probe_window_loss_ratio{job="llama", source=~"a|b"} > 0.01`, []string{"llama_probe_window_loss_ratio"}},
		{`histogram_quantile(0.99, sum by (instance, le) (rate(llama_probe_rtt_seconds_bucket{job="llama"}[5m])))`, []string{"llama_probe_rtt_seconds_bucket"}},
		{`sum(rate(a_total[5m] offset 1h)) without (flow) / on (job) group_left (x) b`, []string{"a_total", "b"}},
		{`label_replace(x * ignoring (dscp) group_left (src_ip) y, "dst", "$1", "destination", "(.+)")`, []string{"x", "y"}},
		{`quantile_over_time(0.5, instance:llama_probe_window_rtt_seconds:p99[1d:5m])`, []string{"instance:llama_probe_window_rtt_seconds:p99"}},
		{`count(m == 0) or vector(0)`, []string{"m"}},
		{`max by (source) (m) + topk without(x) (3, n) + sum BY (a) (o) + sum(bymetric)`, []string{"bymetric", "m", "n", "o"}},
		{`1e-3 * m > bool 2.5E+2 unless n and Inf > NaN`, []string{"m", "n"}},
		{`{__name__="m"}`, nil},
		{`a{l="}{"} + b{l='[)'} + c{l=` + "`x`" + `}`, []string{"a", "b", "c"}},
		{`a + a`, []string{"a"}},
	}
	for _, tc := range tests {
		got, err := metricNames(tc.expr)
		if err != nil {
			t.Errorf("metricNames(%q): %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`a{b="c}`, `a[5m`, `a}`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("metricNames(%q) accepted a malformed expression", bad)
		}
	}
}

// grafanaVar matches Grafana template variables: $name, ${name},
// ${name:format} and [[name]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// grafanaVarNames returns the template variables an expression uses.
func grafanaVarNames(expr string) []string {
	var names []string
	for _, m := range grafanaVar.FindAllStringSubmatch(expr, -1) {
		names = append(names, m[1]+m[2]+m[3])
	}
	return names
}

// substituteGrafanaVars replaces Grafana's interval variables with 5m and
// every other variable with .*, which keeps the expressions valid PromQL
// wherever a dashboard may put a variable (label values and regexps).
func substituteGrafanaVars(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVar.FindStringSubmatch(v)
		switch m[1] + m[2] + m[3] {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		case "__range_s":
			return "300"
		}
		return ".*"
	})
}

func TestSubstituteGrafanaVars(t *testing.T) {
	in := `rate(x{a="$job", b=~"${source:regex}", c="[[dst]]"}[$__rate_interval])`
	want := `rate(x{a=".*", b=~".*", c=".*"}[5m])`
	if got := substituteGrafanaVars(in); got != want {
		t.Errorf("substituteGrafanaVars:\n got %s\nwant %s", got, want)
	}
	if got := grafanaVarNames(in); !slices.Equal(got, []string{"job", "source", "dst", "__rate_interval"}) {
		t.Errorf("grafanaVarNames = %q", got)
	}
}
