package nic

//go:generate go run ./internal/gen -in regmap.yaml -go regmap_gen.go -doc ../docs/regmap.md
