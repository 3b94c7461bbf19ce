package main

import (
	"io"
	"log/slog"
	"time"

	kitlog "github.com/go-kit/log"
	"github.com/go-kit/log/level"
	sloggokit "github.com/tjhop/slog-gokit"
)

// lineKeys are the keys that start every log line, in this order, whether
// the line comes from this package's go-kit logger or through the slog
// bridge (exporter-toolkit, the prober, the reflector): the time, as ts in
// UTC, the level, the file:line of the call, and the message.
var lineKeys = [...]string{"ts", "level", "caller", "msg"}

// newLoggers builds the go-kit logger and its slog bridge (for
// exporter-toolkit and the packages), both writing lines of format
// ("logfmt" or "json") to w and filtered at lvl. Both write one timestamp,
// the ts that go-kit adds, and start their lines with lineKeys.
func newLoggers(w io.Writer, lvl, format string) (kitlog.Logger, *slog.Logger) {
	sw := kitlog.NewSyncWriter(w)
	var out kitlog.Logger
	if format == "json" {
		out = kitlog.NewJSONLogger(sw)
	} else {
		out = kitlog.NewLogfmtLogger(sw)
	}
	var opt level.Option
	var sl slog.Level
	switch lvl {
	case "debug":
		opt, sl = level.AllowDebug(), slog.LevelDebug
	case "warn":
		opt, sl = level.AllowWarn(), slog.LevelWarn
	case "error":
		opt, sl = level.AllowError(), slog.LevelError
	default:
		opt, sl = level.AllowInfo(), slog.LevelInfo
	}
	stamped := kitlog.With(level.NewFilter(lineKeysFirst(out), opt), "ts", kitlog.DefaultTimestampUTC)
	// The bridge's records carry slog's own caller, so it gets no caller key.
	bridge := slog.New(sloggokit.NewGoKitHandler(withoutRecordTime(stamped), sl))
	return kitlog.With(stamped, "caller", kitlog.DefaultCaller), bridge
}

// lineKeysFirst returns a logger that passes each line to next with the
// lineKeys it has moved to the front, in lineKeys order, and its other
// pairs after them as they came. go-kit adds context pairs (ts, caller)
// after the level that level.Info and the like prefix, and the slog bridge
// puts its context pairs before its level, caller and message: this gives
// both one order. (go-kit's JSON logger sorts keys by name whatever the
// order it is given, so both orders agree there too.)
func lineKeysFirst(next kitlog.Logger) kitlog.Logger {
	return kitlog.LoggerFunc(func(keyvals ...any) error {
		moved := make([]bool, len(keyvals)/2)
		sorted := make([]any, 0, len(keyvals))
		for _, k := range lineKeys {
			for i := range moved {
				if !moved[i] && keyvals[2*i] == k {
					moved[i] = true
					sorted = append(sorted, keyvals[2*i], keyvals[2*i+1])
					break
				}
			}
		}
		for i, m := range moved {
			if !m {
				sorted = append(sorted, keyvals[2*i], keyvals[2*i+1])
			}
		}
		if len(keyvals)%2 != 0 { // a key without a value, for next to flag
			sorted = append(sorted, keyvals[len(keyvals)-1])
		}
		return next.Log(sorted...)
	})
}

// withoutRecordTime returns a logger for the slog bridge that drops the
// time it adds from the slog record (key "time", before the message), so
// that a bridged line carries one timestamp: the ts that next adds, as on
// every other line. Pairs after the message, the record's attributes, are
// passed on whatever their keys.
func withoutRecordTime(next kitlog.Logger) kitlog.Logger {
	return kitlog.LoggerFunc(func(keyvals ...any) error {
		for i := 0; i+1 < len(keyvals) && keyvals[i] != slog.MessageKey; i += 2 {
			if _, ok := keyvals[i+1].(time.Time); ok && keyvals[i] == slog.TimeKey {
				keyvals = append(keyvals[:i:i], keyvals[i+2:]...)
				break
			}
		}
		return next.Log(keyvals...)
	})
}
