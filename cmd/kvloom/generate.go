package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvloom/kvloom/engine"
)

// modelDir resolves --model: the flag when set, else the workspace's
// stories260K found above the working directory or the executable.
func modelDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, s := range starts {
		if d, err := engine.FindDefaultModelDir(s); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("--model is required: no %s found above %q: %w", engine.DefaultModelSubdir, starts, errUsage)
}

func newGenerateCmd() *cobra.Command {
	var (
		model       string
		prompt      string
		steps       int
		temperature float32
		topP        float32
		seed        uint64
	)
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "generate text with the reference engine (output compares with llama2.c's run)",
		Long: `generate runs the reference CPU engine on a llama2.c model directory and prints
the prompt and its continuation the way llama2.c's run does, so that
"kvloom generate --prompt P --tokens N --temperature T --seed S" can be compared
with "run MODEL.bin -z TOKENIZER.bin -i P -n N -t T -s S" (top-p 0.9 on both).
--tokens counts positions as run's -n does: BOS and the prompt's tokens included.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if steps < 0 {
				return fmt.Errorf("--tokens %d: want >= 0 (0 means the model's seq_len): %w", steps, errUsage)
			}
			if seed == 0 {
				seed = uint64(time.Now().Unix()) // run.c's default
			}
			sampler, err := engine.NewSampler(temperature, topP, seed)
			if err != nil {
				return fmt.Errorf("%w: %w", err, errUsage)
			}
			dir, err := modelDir(model)
			if err != nil {
				return err
			}
			e, tok, err := engine.Open(dir)
			if err != nil {
				return err
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			start := time.Now()
			toks, err := e.Generate(cmd.Context(), tok, engine.GenerateOptions{Prompt: prompt, Steps: steps, Sampler: sampler}, func(p string) error {
				_, err := w.WriteString(engine.Printable(p))
				return err
			})
			if err != nil {
				return err
			}
			if _, err := w.WriteString("\n"); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if el := time.Since(start); len(toks) > 0 && el > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "achieved tok/s: %f\n", float64(len(toks))/el.Seconds())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "llama2.c model directory (checkpoint *.bin and tokenizer tok*.bin); default: ../shared/testdata/models/stories260K when it exists")
	f.StringVar(&prompt, "prompt", "", "prompt text (empty: start from BOS alone)")
	f.IntVar(&steps, "tokens", 256, "positions to run, prompt included, as run's -n (0: the model's seq_len)")
	f.Float32Var(&temperature, "temperature", 1.0, "sampling temperature; 0 is greedy")
	f.Float32Var(&topP, "topp", 0.9, "top-p (nucleus) sampling; 0 or 1 samples the whole distribution")
	f.Uint64Var(&seed, "seed", 0, "RNG seed (llama2.c's xorshift); 0 seeds from the clock as run does")
	return cmd
}
