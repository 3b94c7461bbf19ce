package config

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse decodes a configuration file, fills in defaults and validates it.
//
// Decoding is strict: the input must be a single YAML document; unknown
// fields, duplicate keys and values of the wrong type are errors. At least
// one module must be defined. The error is an *Error naming the line and
// field path, such as
//
//	line 7: modules.default.flows: must be at least 1, got 0
//
// YAML syntax errors are reported with the line the YAML parser gives.
// Anchors, aliases and merge keys are expanded by the YAML library, which
// rejects a document whose aliases expand to nearly all of what it decodes.
func Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // for what the YAML library decodes without our checks
	var c Config
	err := dec.Decode(&c)
	if ce := (*Error)(nil); err != nil && !errors.As(err, &ce) && !errors.Is(err, io.EOF) {
		return nil, fromYAML(err, "", nil) // a syntax error: the parser stopped
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fromYAML(err, "", nil)
		}
		return nil, errorf(extra.Line, "", "only one YAML document is allowed")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if c.Modules == nil { // an empty or null document
		return nil, errorf(0, "modules", "at least one module must be defined")
	}
	return &c, nil
}

// UnmarshalYAML decodes a configuration with the rules of Parse, so that a
// Config embedded in another YAML document is also decoded strictly, with
// defaults and validation. Errors are *Error.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	n, fields, err := mappingOf(unmarshal, "configuration", reflect.TypeFor[Config]())
	if err != nil {
		err.Line = cmp.Or(err.Line, n.Line)
		return err
	}
	mods := fields["modules"]
	mn, line := resolve(&mods), keyLine(n, "modules", n.Line)
	if err := checkModules(mn, line); err != nil {
		return err
	}
	var f struct {
		Modules map[string]moduleEntry `yaml:"modules"`
	}
	if err := unmarshal(&f); err != nil {
		return fromYAML(err, "modules", mn)
	}
	if len(f.Modules) == 0 {
		return errorf(line, "modules", "at least one module must be defined")
	}
	c.Modules = make(map[string]*Module, len(f.Modules))
	for _, name := range keys(mn, f.Modules) { // the first error in the file
		e := f.Modules[name]
		if e.m == nil && e.err == nil { // a null module
			e.m, e.err = finish(DefaultModule(), nil, nil)
		}
		if e.err != nil {
			e.err.Path = strings.TrimSuffix("modules."+name+"."+e.err.Path, ".")
			e.err.Line = cmp.Or(e.err.Line, keyLine(mn, name, e.line))
			return e.err
		}
		c.Modules[name] = e.m
	}
	return nil
}

// moduleEntry decodes one module of a Config. It keeps its error instead of
// returning it, since only the Config knows the module's name for the
// error's path.
type moduleEntry struct {
	m    *Module
	line int // of the module's value
	err  *Error
}

// UnmarshalYAML decodes the module, never failing.
func (e *moduleEntry) UnmarshalYAML(unmarshal func(any) error) error {
	var n *yaml.Node
	e.m, n, e.err = decodeModule(unmarshal)
	e.line = n.Line
	return nil
}

// UnmarshalYAML decodes a single module with the rules of Parse: fields
// left out get the defaults of DefaultModule (packet_size and port those of
// the prober), unknown fields are errors and the result is validated.
// Errors are *Error, with paths relative to the module.
func (m *Module) UnmarshalYAML(unmarshal func(any) error) error {
	nm, n, err := decodeModule(unmarshal)
	if err != nil {
		err.Line = cmp.Or(err.Line, n.Line)
		return err
	}
	*m = *nm
	return nil
}

// plainModule is Module without its UnmarshalYAML, for the YAML library to
// decode the fields into.
type plainModule Module

// decodeModule decodes the module being unmarshalled, and returns its node:
// the YAML library decodes the fields over the defaults once mappingOf has
// checked them. Error paths are relative to the module, at line 0 for a
// field that the file does not set.
func decodeModule(unmarshal func(any) error) (m *Module, n *yaml.Node, err *Error) {
	n, fields, err := mappingOf(unmarshal, "module", reflect.TypeFor[Module]())
	if err != nil {
		return nil, n, err
	}
	nm := DefaultModule()
	if err := unmarshal((*plainModule)(&nm)); err != nil {
		return nil, n, fromYAML(err, "", n)
	}
	m, err = finish(nm, n, fields)
	return m, n, err
}
