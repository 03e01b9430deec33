package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds what Parse reads; a topology of thousands of hosts is
// far below it.
const MaxFileSize = 16 << 20

// Parse reads a topology file strictly (unknown keys, duplicate keys, wrong
// types and trailing documents are errors, each with its line) and
// validates it, reporting every problem at once. On error the result is nil.
func Parse(data []byte) (t *Topology, err error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("topology of %d bytes, limit %d: %w", len(data), MaxFileSize, ErrSyntax)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("empty topology file: %w", ErrSyntax)
	}
	defer func() {
		// yaml.v3 has panicked on some malformed input in the past; a bad
		// file must come back as an error, never take the caller down.
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("malformed YAML (%v): %w", r, ErrSyntax)
		}
	}()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimPrefix(err.Error(), "yaml: "), ErrSyntax)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: a topology file is a mapping with version, hosts, switches and links: %w", max(root.Line, 1), ErrSyntax)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var out Topology
	if err := dec.Decode(&out); err != nil {
		return nil, decodeError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("more than one YAML document; a topology file holds one: %w", ErrSyntax)
	}
	var p problems
	out.validate(&p)
	if len(p.errs) > 0 {
		for _, e := range p.errs {
			e.Line = lineOf(root.Content[0], e.path)
		}
		return nil, p.err()
	}
	return &out, nil
}

// Read parses a topology from r (see Parse).
func Read(r io.Reader) (*Topology, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return Parse(data)
}

// ReadFile parses the topology file at path (see Parse); errors name the
// file.
func ReadFile(path string) (*Topology, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", path, err)
	}
	return t, nil
}

// Marshal writes the topology in the file format. The output is
// deterministic: the same Topology always gives the same bytes, and Parse
// of the output gives back an equal Topology (up to empty versus nil
// slices).
func (t *Topology) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(t); err != nil {
		return nil, fmt.Errorf("marshal topology: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal topology: %w", err)
	}
	return buf.Bytes(), nil
}

// lineOf finds the line of the node at path (string keys, int indices)
// under n; where the path goes further than the file (a missing field) it
// returns the line of the deepest node found.
func lineOf(n *yaml.Node, path []any) int {
	line := n.Line
	for _, el := range path {
		switch v := el.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == v {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || v >= len(n.Content) {
				return line
			}
			n = n.Content[v]
			line = n.Line
		}
	}
	return line
}

var (
	unknownFieldRE = regexp.MustCompile(`^line (\d+): field (\S+) not found in type topology\.(\w+)$`)
	typeErrRE      = regexp.MustCompile(`^line (\d+): cannot unmarshal !!(\w+) ` + "`" + `([^` + "`" + `]*)` + "`" + ` into (\S+)$`)
)

// decodeError rewrites yaml.v3's errors into this format's terms: unknown
// keys name the keys that are allowed.
func decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w", strings.TrimPrefix(err.Error(), "yaml: "), ErrSyntax)
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
			errs = append(errs, fmt.Errorf("line %s: unknown key %q in %s (known: %s): %w",
				m[1], m[2], sectionName(m[3]), strings.Join(knownKeys(m[3]), ", "), ErrSyntax))
			continue
		}
		if m := typeErrRE.FindStringSubmatch(msg); m != nil {
			errs = append(errs, fmt.Errorf("line %s: %s value %q where %s is expected: %w",
				m[1], m[2], m[3], goTypeName(m[4]), ErrSyntax))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %w", msg, ErrSyntax))
	}
	return errors.Join(errs...)
}

// sections maps the Go type names yaml.v3 reports to the types' section
// names in docs/topology.md.
var sections = map[string]reflect.Type{
	"Topology":   reflect.TypeFor[Topology](),
	"Host":       reflect.TypeFor[Host](),
	"NUMANode":   reflect.TypeFor[NUMANode](),
	"Bridge":     reflect.TypeFor[Bridge](),
	"GPU":        reflect.TypeFor[GPU](),
	"NIC":        reflect.TypeFor[NIC](),
	"Accel":      reflect.TypeFor[Accel](),
	"NVMe":       reflect.TypeFor[NVMe](),
	"Tier":       reflect.TypeFor[Tier](),
	"Switch":     reflect.TypeFor[Switch](),
	"Link":       reflect.TypeFor[Link](),
	"LinkParams": reflect.TypeFor[LinkParams](),
	"GPUSpec":    reflect.TypeFor[GPUSpec](),
}

var sectionNames = map[string]string{
	"Topology": "the top level", "Host": "a host", "NUMANode": "a numa node",
	"Bridge": "a pcie bridge", "GPU": "a gpu", "NIC": "a nic", "Accel": "accel",
	"NVMe": "an nvme drive", "Tier": "a tier", "Switch": "a switch", "Link": "a link",
	"LinkParams": "an interconnect", "GPUSpec": "a gpu model",
}

func sectionName(goName string) string {
	if n, ok := sectionNames[goName]; ok {
		return n
	}
	return goName
}

// knownKeys lists the yaml keys of a type, following inline fields.
func knownKeys(goName string) []string {
	t, ok := sections[goName]
	if !ok {
		return nil
	}
	var keys []string
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if strings.Contains(opts, "inline") {
				walk(f.Type)
				continue
			}
			if name != "" && name != "-" {
				keys = append(keys, name)
			}
		}
	}
	walk(t)
	slices.Sort(keys)
	return keys
}

func goTypeName(s string) string {
	switch {
	case strings.HasPrefix(s, "[]"):
		return "a list"
	case strings.HasPrefix(s, "int"), strings.HasPrefix(s, "uint"):
		return "an integer"
	case strings.HasPrefix(s, "float"):
		return "a number"
	case s == "string", strings.HasPrefix(s, "topology."):
		if _, ok := sections[strings.TrimPrefix(s, "topology.")]; ok {
			return "a mapping"
		}
		return "a string"
	}
	return s
}
