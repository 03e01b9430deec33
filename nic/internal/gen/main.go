// Command gen is the register-map generator: it writes the register map's
// Go constants (nic/regmap_gen.go) and the tables of docs/regmap.md from one
// source, nic/regmap.yaml, so that code and documentation cannot drift.
//
// It runs from `go generate ./nic`:
//
//	go run ./internal/gen -in regmap.yaml -go regmap_gen.go -doc ../docs/regmap.md
//
// It imports no kvloom package.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
)

func main() {
	in := flag.String("in", "regmap.yaml", "register map source")
	goOut := flag.String("go", "regmap_gen.go", "Go file to write")
	docOut := flag.String("doc", "../docs/regmap.md", "markdown file whose generated section is rewritten")
	flag.Parse()
	if err := run(*in, *goOut, *docOut); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// run reads the source and rewrites both outputs; nothing is written when
// the source is invalid.
func run(in, goOut, docOut string) error {
	goSrc, doc, err := generate(in, docOut)
	if err != nil {
		return err
	}
	if err := writeIfChanged(goOut, goSrc); err != nil {
		return err
	}
	return writeIfChanged(docOut, doc)
}

// generate returns the Go file and the new contents of the doc file.
func generate(in, docPath string) (goSrc, doc []byte, err error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, nil, fmt.Errorf("open register map: %w", err)
	}
	defer f.Close()
	s, err := parseSpec(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", in, err)
	}
	goSrc, err = goSource(s)
	if err != nil {
		return nil, nil, err
	}
	old, err := os.ReadFile(docPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read doc: %w", err)
	}
	doc, err = spliceDoc(old, docTables(s))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", docPath, err)
	}
	return goSrc, doc, nil
}

func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
