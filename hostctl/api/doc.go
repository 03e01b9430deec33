// Package api holds kvloomd's gRPC API: kvloom.proto and the code protoc
// generates from it (kvloom.pb.go, kvloom_grpc.pb.go; do not edit them, run
// `make generate`). docs/api.md describes every call.
//
// api imports only protobuf and gRPC; hostctl implements the services and
// cmd/kvloom is a client.
package api

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative kvloom.proto"
