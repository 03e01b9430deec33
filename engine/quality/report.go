package quality

import (
	"fmt"
	"image/color"
	"io"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// WriteTable writes the report as an aligned text table.
func (r *BlendReport) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "model %s (fingerprint %s): %d prompts of %d-%d stories, mean %.0f tokens; %d continuation positions scored\n",
		r.Model, r.Fingerprint, r.Set.Prompts, r.Set.MinDocs, r.Set.MaxDocs, r.PromptTokens, r.Positions)
	fmt.Fprintf(w, "CacheBlend (ratio:r, r of the reused tokens): check layers %v, gradual filtering widen %g\n\n", r.CheckLayers, r.Widen)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tmean KL (nats)\t± s.e.\ttop-1 agree\tgreedy match (tok)\trecomputed\tcompute\t")
	for _, x := range r.Results {
		fmt.Fprintf(tw, "%s\t%.5f\t%.5f\t%.3f\t%.1f\t%.1f%%\t%.1f%%\t\n", x.Policy, x.MeanKL, x.KLStdErr, x.Top1, x.MatchLen, 100*x.Recomputed, 100*x.Compute)
	}
	return tw.Flush()
}

// WritePlot draws mean KL against the fraction of prompt tokens
// recomputed, one line per policy family, in format "svg", "png" or "pdf".
func (r *BlendReport) WritePlot(w io.Writer, format string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Blending quality on %s (%d prompts)", r.Model, r.Set.Prompts)
	p.X.Label.Text = "fraction of prompt tokens recomputed"
	p.Y.Label.Text = "mean KL(full prefill ‖ policy), nats"
	p.Add(plotter.NewGrid())
	family := map[string]plotter.XYs{}
	var labels plotter.XYLabels
	var reuse *PolicyResult
	for i, x := range r.Results {
		name, _, _ := strings.Cut(x.Policy, ":")
		family[name] = append(family[name], plotter.XY{X: x.Recomputed, Y: x.MeanKL})
		labels.XYs = append(labels.XYs, plotter.XY{X: x.Recomputed, Y: x.MeanKL})
		labels.Labels = append(labels.Labels, x.Policy)
		if name == "reuse" {
			reuse = &r.Results[i]
		}
	}
	styles := []struct {
		name, legend string
		c            color.Color
		shape        draw.GlyphDrawer
	}{
		{"epic", "epic:k (first k tokens of each chunk)", color.RGBA{R: 31, G: 119, B: 180, A: 255}, draw.TriangleGlyph{}},
		{"ratio", "ratio:r (CacheBlend deviation)", color.RGBA{R: 214, G: 39, B: 40, A: 255}, draw.CircleGlyph{}},
		{"reuse", "full reuse (RoPE fixed)", color.Black, draw.BoxGlyph{}},
		{"prefix", "prefix-only reuse", color.RGBA{R: 44, G: 160, B: 44, A: 255}, draw.PyramidGlyph{}},
		{"full", "full prefill", color.Gray{Y: 100}, draw.CrossGlyph{}},
	}
	for _, st := range styles {
		pts, ok := family[st.name]
		if !ok {
			continue
		}
		if (st.name == "epic" || st.name == "ratio") && reuse != nil {
			// both families start from full reuse (no recompute)
			pts = append(plotter.XYs{{X: reuse.Recomputed, Y: reuse.MeanKL}}, pts...)
		}
		line, scatter, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", st.name, err)
		}
		line.Color = st.c
		scatter.Color = st.c
		scatter.Shape = st.shape
		scatter.Radius = vg.Points(3)
		if len(pts) > 1 {
			p.Add(line)
		}
		p.Add(scatter)
		p.Legend.Add(st.legend, scatter)
	}
	lab, err := plotter.NewLabels(labels)
	if err != nil {
		return fmt.Errorf("plot labels: %w", err)
	}
	for i := range lab.TextStyle {
		lab.TextStyle[i].Font.Size = vg.Points(7)
		lab.TextStyle[i].XAlign = -0.1 // a little right of the point
	}
	p.Add(lab)
	p.Legend.Top = true
	p.X.Min = 0
	p.Y.Min = 0
	wt, err := p.WriterTo(7*vg.Inch, 4.5*vg.Inch, format)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}
