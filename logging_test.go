package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logfmt/logfmt"
	"github.com/llama-exporter/llama_exporter/internal/testlab"
)

// TestLogLinesShareOneFormat starts the exporter at debug level in each log
// format and has it probe its own reflector, and checks every line it
// writes until it exits: its own, exporter-toolkit's and the prober's (the
// last two through the slog bridge) all carry lineKeys in one order, and
// one timestamp.
func TestLogLinesShareOneFormat(t *testing.T) {
	// Lines from each source: this package, exporter-toolkit, the prober.
	wantMsgs := []string{"starting llama_exporter", "reflector listening", "shutting down",
		"Listening on", "TLS is disabled.", "probe session started"}
	callerRE := regexp.MustCompile(`^[a-z_]+\.go:[0-9]+$`)
	for _, format := range []string{"logfmt", "json"} {
		t.Run(format, func(t *testing.T) {
			want := lineKeys[:]
			if format == "json" {
				// go-kit's JSON logger writes an object's keys
				// sorted by name.
				want = slices.Sorted(slices.Values(lineKeys[:]))
			}
			lines := exporterLog(t, format)
			msgs := map[string]bool{}
			for _, line := range lines {
				keys, vals, err := parseLine(format, line)
				if err != nil {
					t.Errorf("%v: %q", err, line)
					continue
				}
				msgs[vals["msg"]] = true
				var got []string
				for _, k := range keys {
					if slices.Contains(lineKeys[:], k) {
						got = append(got, k)
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("keys %q, want %q in this order: %q", got, want, line)
				}
				if format == "logfmt" && !slices.Equal(keys[:min(len(keys), len(want))], want) {
					t.Errorf("line does not start with %q: %q", want, line)
				}
				if ts := timestamps(keys, vals); !slices.Equal(ts, []string{"ts"}) {
					t.Errorf("timestamps in %q, want only ts: %q", ts, line)
				}
				if !callerRE.MatchString(vals["caller"]) {
					t.Errorf("caller %q is no file.go:line: %q", vals["caller"], line)
				}
				if msg := vals["msg"]; (msg == "starting llama_exporter" || msg == "shutting down") &&
					!strings.HasPrefix(vals["caller"], "main.go:") {
					t.Errorf("caller %q, want the call in main.go: %q", vals["caller"], line)
				}
			}
			for _, m := range wantMsgs {
				if !msgs[m] {
					t.Errorf("no line with msg %q among:\n%s", m, strings.Join(lines, ""))
				}
			}
		})
	}
}

// logLines is an io.Writer that passes each write, one log line from go-kit,
// on to its channel.
type logLines chan string

func (c logLines) Write(p []byte) (int, error) {
	c <- string(p)
	return len(p), nil
}

// exporterLog runs the exporter at debug level, logging in format, until
// exporter-toolkit says it listens; then has it probe its own reflector,
// stops it with SIGTERM and returns every line it wrote.
func exporterLog(t *testing.T, format string) []string {
	t.Helper()
	web, refl := testlab.FreeTCP(t), testlab.FreeUDP(t)
	out := make(logLines, 1024)
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--web.listen-address=" + web, "--reflector.listen-address=" + refl,
			"--log.level=debug", "--log.format=" + format}, out)
	}()
	// While this test sends SIGTERM, the test binary catches it too, so
	// that a signal that comes after run has returned cannot kill it.
	caught := make(chan os.Signal, 1)
	signal.Notify(caught, syscall.SIGTERM)
	t.Cleanup(func() { signal.Stop(caught) })
	var lines []string
	exited := false
	t.Cleanup(func() {
		if exited {
			return
		}
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		for {
			select {
			case <-out:
			case <-done:
				return
			}
		}
	})
	// await reads lines until one contains s.
	await := func(s string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l := <-out:
				lines = append(lines, l)
				if strings.Contains(l, s) {
					return
				}
			case code := <-done:
				exited = true
				t.Fatalf("exporter exited %d before logging %q; it logged:\n%s", code, s, strings.Join(lines, ""))
			case <-deadline:
				t.Fatalf("no line with %q within 10s; the exporter logged:\n%s", s, strings.Join(lines, ""))
			}
		}
	}
	await("TLS is disabled.")
	resp, err := http.Get("http://" + web + "/probe?target=" + refl)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	await("probe session started")
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		exited = true
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of SIGTERM")
	}
	for {
		select {
		case l := <-out:
			lines = append(lines, l)
		default:
			return lines
		}
	}
}

// parseLine returns the keys of one log line in the order it has them,
// and their values as text (JSON strings unquoted, other JSON values as
// written).
func parseLine(format, line string) (keys []string, vals map[string]string, err error) {
	vals = map[string]string{}
	add := func(k, v string) {
		keys = append(keys, k)
		vals[k] = v
	}
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		return nil, nil, fmt.Errorf("not one line")
	}
	if format == "logfmt" {
		d := logfmt.NewDecoder(strings.NewReader(line))
		for d.ScanRecord() {
			for d.ScanKeyval() {
				add(string(d.Key()), string(d.Value()))
			}
		}
		return keys, vals, d.Err()
	}
	d := json.NewDecoder(strings.NewReader(line))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("not a JSON object (%v)", err)
	}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, nil, err
		}
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return nil, nil, err
		}
		v := string(raw)
		var s string
		if json.Unmarshal(raw, &s) == nil {
			v = s
		}
		add(tok.(string), v)
	}
	if tok, err := d.Token(); err != nil || tok != json.Delim('}') {
		return nil, nil, fmt.Errorf("JSON object not closed (%v)", err)
	}
	return keys, vals, nil
}

// timestamps returns the keys whose values are RFC 3339 times.
func timestamps(keys []string, vals map[string]string) []string {
	var ts []string
	for _, k := range keys {
		if _, err := time.Parse(time.RFC3339Nano, vals[k]); err == nil {
			ts = append(ts, k)
		}
	}
	return ts
}

// TestBridgeKeepsTimeAttribute checks that the slog bridge drops only the
// record's own time: an attribute that happens to be called time stays.
func TestBridgeKeepsTimeAttribute(t *testing.T) {
	out := make(logLines, 1)
	_, bridge := newLoggers(out, "info", "logfmt")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bridge.Info("m", "time", at, "n", 1)
	keys, vals, err := parseLine("logfmt", <-out)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ts", "level", "caller", "msg", "time", "n"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	if !strings.HasPrefix(vals["time"], "2026-01-02") {
		t.Fatalf("time=%q, want the attribute's value", vals["time"])
	}
}
