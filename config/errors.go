package config

import (
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration error, located in the YAML input where possible.
// Its text is "line L: path: message", without the parts that are unknown.
type Error struct {
	// Line is the 1-based line of the offending key or list element, or 0
	// if unknown.
	Line int
	// Path is the dotted path of the offending field, such as
	// "modules.default.flows" or "modules.x.allowed_targets[1]"; empty for
	// errors about the document as a whole.
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error implements the error interface.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func errorf(line int, path, format string, args ...any) *Error {
	return &Error{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// locate places a field error of mapping n at the line of the field's key,
// or of the list element it is about; at line 0 when fields lacks it.
func locate(fe *fieldError, n *yaml.Node, fields map[string]yaml.Node) *Error {
	v, ok := fields[fe.field]
	line := 0
	if ok {
		line = keyLine(n, fe.field, v.Line)
	}
	if s := resolve(&v); ok && fe.index >= 0 && s.Kind == yaml.SequenceNode && fe.index < len(s.Content) {
		line = s.Content[fe.index].Line
	}
	return &Error{Line: line, Path: fe.path(), Msg: fe.msg}
}

// fromYAML turns an error of the YAML library, met while decoding the node
// n at path, into an *Error: its first message, at the line it names, in
// the words of this package where they differ.
func fromYAML(err error, path string, n *yaml.Node) *Error {
	if ce := (*Error)(nil); errors.As(err, &ce) {
		return ce
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
		msg = te.Errors[0]
	}
	switch msg {
	case "document contains excessive aliasing":
		msg = "document too large after expanding aliases"
	case "map merge requires map or sequence of maps as the value":
		if n != nil {
			return mergeError(n, path)
		}
	}
	var line int
	if c, _ := fmt.Sscanf(msg, "line %d: ", &line); c == 1 {
		_, msg, _ = strings.Cut(msg, ": ")
	}
	return &Error{Line: line, Path: path, Msg: msg}
}

// mergeError words the library's refusal of a merge key ("<<"), which says
// neither where it is nor what it got, for mapping n or what n merges.
func mergeError(n *yaml.Node, path string) *Error {
	if k, got := badMerge(n, map[*yaml.Node]bool{}); k != nil {
		return errorf(k.Line, path, "merge key value must be a mapping or a sequence of mappings, got %s", got)
	}
	return errorf(n.Line, path, "merge key value must be a mapping or a sequence of mappings")
}

// badMerge returns the first merge key, in mapping n or in the mappings it
// merges, whose value is not a mapping or a sequence of mappings, and what
// it got instead. seen keeps aliases from repeating the search.
func badMerge(n *yaml.Node, seen map[*yaml.Node]bool) (*yaml.Node, string) {
	k, v := entry(n, "<<")
	if k == nil || seen[n] {
		return nil, ""
	}
	seen[n] = true
	srcs, what := []*yaml.Node{v}, ""
	if v = resolve(v); v.Kind == yaml.SequenceNode {
		srcs, what = v.Content, "a sequence containing "
	}
	for _, src := range srcs {
		if src = resolve(src); src.Kind != yaml.MappingNode {
			return k, what + kindOf(src)
		}
		if k, got := badMerge(src, seen); k != nil {
			return k, got
		}
	}
	return nil, ""
}
