package hostctl

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// MarshalConfig writes c as YAML with each key's documentation as a comment
// above it: what `kvloomd config default` and `kvloomd --print-config` show.
func MarshalConfig(c Config) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	addDocs(&n, reflect.TypeOf(c))
	n.HeadComment = "kvloomd configuration (docs/operations.md). Every key is optional;\nthe values below are what this daemon runs with."
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// addDocs attaches the doc tags of t's fields to the mapping n.
func addDocs(n *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			addDocs(c, t)
		}
		return
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return
	}
	docs := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		docs[strings.Split(f.Tag.Get("yaml"), ",")[0]] = f
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		f, ok := docs[n.Content[i].Value]
		if !ok {
			continue
		}
		n.Content[i].HeadComment = f.Tag.Get("doc")
		addDocs(n.Content[i+1], f.Type)
	}
}
