// Package workload builds real-text workloads for kvloom's benchmarks and
// tests: it tokenizes text that is on every machine — the Go
// distribution's own documentation and sources — with a real BPE tokenizer
// (cl100k_base, github.com/tiktoken-go/tokenizer, vocabularies embedded, no
// network), and generates RAG-style prompts (a shared system prompt, 3–8
// documents drawn with Zipf popularity, a question) and multi-turn chats,
// deterministically from a seed. It also holds the logic of the `kvloom
// match` command, so that it stays thin. (`kvloom demo` lives in
// hostctl/demo: it drives the daemon with the reference engine.)
//
// workload imports matcher only. Errors wrap ErrNoCorpus (no text found
// where it looked), ErrPromptsFile (a malformed prompts file: the line and
// field are named) and the matcher's sentinels.
package workload
