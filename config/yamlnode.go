package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file holds what the YAML library leaves to us: checks of the YAML
// types of values, worded as this package words them, and the lines of
// keys for errors found after decoding.

// nodeRef takes the node being decoded, where decoding into a yaml.Node
// would decode into the Node's own fields.
type nodeRef struct{ n *yaml.Node }

// UnmarshalYAML keeps n.
func (r *nodeRef) UnmarshalYAML(n *yaml.Node) error {
	r.n = n
	return nil
}

// mappingOf returns the node of the mapping being unmarshalled and its
// entries, merge keys applied and duplicate keys refused by the YAML
// library, once checkFields accepts them for a value of type t. what names
// the mapping in the error for another kind of node.
func mappingOf(unmarshal func(any) error, what string, t reflect.Type) (*yaml.Node, map[string]yaml.Node, *Error) {
	var r nodeRef
	_ = unmarshal(&r) // cannot fail
	n := r.n
	if n.Kind != yaml.MappingNode { // at the line of its key, which the caller knows
		return n, nil, errorf(0, "", "%s must be a mapping, got %s", what, kindOf(n))
	}
	if err := checkKeys(n, "", t); err != nil {
		return n, nil, err
	}
	var fields map[string]yaml.Node
	if err := unmarshal(&fields); err != nil {
		return n, nil, fromYAML(err, "", n)
	}
	return n, fields, checkFields(n, fields, t)
}

// checkModules checks the modules mapping mn, whose key is on line, for
// what decoding it into a map would not refuse.
func checkModules(mn *yaml.Node, line int) *Error {
	if !isNull(mn) && mn.Kind != yaml.MappingNode {
		return errorf(line, "modules", "must be a mapping of module names to modules, got %s", kindOf(mn))
	}
	for i := 0; i < len(mn.Content); i += 2 {
		if k := mn.Content[i]; k.Kind == yaml.ScalarNode && (isNull(k) || k.Value == "") {
			return errorf(k.Line, "modules", "module name must not be empty")
		}
	}
	return checkKeys(mn, "modules", nil)
}

// checkKeys refuses keys of mapping n that are not scalars, which the
// library would report as type errors, and null ones, which it would skip:
// they name no field of t, when t is not nil.
func checkKeys(n *yaml.Node, path string, t reflect.Type) *Error {
	for i := 0; i < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Kind != yaml.ScalarNode {
			return errorf(k.Line, path, "mapping key must be a scalar, got %s", kindOf(k))
		} else if isNull(k) && t != nil {
			return errorf(k.Line, path, "field %s not found in type %s", k.Value, t)
		}
	}
	return nil
}

// checkFields checks, in the order of the file, that every entry of a
// mapping names a field of t, as KnownFields would but also in documents
// decoded without it, and that the YAML type of its value suits the field.
func checkFields(n *yaml.Node, fields map[string]yaml.Node, t reflect.Type) *Error {
	types := map[string]reflect.Type{}
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "-" {
			types[name] = f.Type
		}
	}
	for _, name := range keys(n, fields) {
		v := fields[name]
		ft, ok := types[name]
		if !ok {
			return errorf(keyLine(n, name, v.Line), "", "field %s not found in type %s", name, t)
		}
		if fe := valueError(name, ft, &v); fe != nil {
			return locate(fe, n, fields)
		}
	}
	return nil
}

// valueError checks that v, the value of field, has the YAML type that the
// field's Go type t needs. The library converts more loosely (8.5 into an
// int, "yes" into a bool; it drops null list elements) and its errors speak
// of Go types. A null value keeps the default. Types not known here, such
// as nested mappings, are left to the library.
func valueError(field string, t reflect.Type, v *yaml.Node) *fieldError {
	if v = resolve(v); isNull(v) {
		return nil
	}
	if t.Kind() != reflect.Slice {
		if msg := scalarError(t, v); msg != "" {
			return fieldErr(field, "%s", msg)
		}
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return fieldErr(field, "must be a sequence, got %s", kindOf(v))
	}
	for i, e := range v.Content {
		if msg := scalarError(t.Elem(), resolve(e)); msg != "" {
			return &fieldError{field: field, index: i, msg: msg}
		}
	}
	return nil
}

// scalarError says why v is not a value of type t, or returns "".
func scalarError(t reflect.Type, v *yaml.Node) string {
	var want string
	var tags []string // YAML tags accepted, any if empty
	switch {
	case t == reflect.TypeFor[time.Duration]():
		if v.Kind == yaml.ScalarNode && !isNull(v) {
			if _, err := time.ParseDuration(v.Value); err != nil || v.ShortTag() != "!!str" {
				return fmt.Sprintf("invalid duration %q", v.Value)
			}
			return ""
		}
		want = `a duration such as "100ms"`
	case t.Kind() == reflect.String:
		want = "a string"
	case t.Kind() == reflect.Int:
		want, tags = "an integer", []string{"!!int"}
	case t.Kind() == reflect.Bool:
		want, tags = "true or false", []string{"!!bool"}
	case t.Kind() == reflect.Float64:
		want, tags = "a number", []string{"!!int", "!!float"}
	default:
		return ""
	}
	if v.Kind != yaml.ScalarNode || isNull(v) || tags != nil && !slices.Contains(tags, v.ShortTag()) ||
		t.Kind() == reflect.Int && v.Decode(new(int)) != nil { // out of range
		return fmt.Sprintf("must be %s, got %s", want, kindOf(v))
	}
	return ""
}

// keys returns the keys of m in the order of the file: first those written
// in mapping n, then those that merge keys brought, sorted.
func keys[V any](n *yaml.Node, m map[string]V) []string {
	var out []string
	seen := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i].Value; !seen[k] {
			if _, ok := m[k]; ok {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !seen[k] {
			out = append(out, k)
		}
	}
	return out
}

// keyLine returns the line of the key name written in mapping n, or def.
func keyLine(n *yaml.Node, name string, def int) int {
	if k, _ := entry(n, name); k != nil {
		return k.Line
	}
	return def
}

// entry returns the key name written in mapping n and its value, or nils.
func entry(n *yaml.Node, name string) (k, v *yaml.Node) {
	for i := 0; n != nil && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// isNull reports whether n is absent or a YAML null.
func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindOf describes a node for error messages.
func kindOf(n *yaml.Node) string {
	switch n = resolve(n); {
	case isNull(n):
		return "null"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a sequence"
	}
	return fmt.Sprintf("%q", n.Value)
}
