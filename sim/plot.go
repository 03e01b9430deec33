package sim

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// policyColors gives each policy a fixed colour, so that plots of
// different runs compare at a glance.
var policyColors = map[string]color.RGBA{
	string(PolicyRecompute):   {R: 0x55, G: 0x55, B: 0x55, A: 0xff},
	string(PolicyGPUPrefix):   {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	string(PolicyHostOffload): {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	string(PolicyInNet):       {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	string(PolicyInNetBlend):  {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
}

// PlotTTFT draws the TTFT distribution of every policy as a CDF (log-scaled
// milliseconds) and writes it as SVG or PNG, chosen by format ("svg" or
// "png").
func PlotTTFT(w io.Writer, r *Report, format string) error {
	format = strings.ToLower(format)
	if format != "svg" && format != "png" {
		return fmt.Errorf("plot format %q, want svg or png: %w", format, ErrConfig)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("TTFT, %s on %s (%d requests)", r.Workload, r.Topology, r.Requests)
	p.X.Label.Text = "time to first token (ms, log scale)"
	p.Y.Label.Text = "fraction of requests"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	for _, pr := range r.Policies {
		s := slices.Clone(pr.ttft)
		if len(s) == 0 {
			continue
		}
		slices.Sort(s)
		// At most 2000 points per curve keep the SVG small.
		step := max(1, len(s)/2000)
		pts := make(plotter.XYs, 0, len(s)/step+2)
		for i := 0; i < len(s); i += step {
			pts = append(pts, plotter.XY{X: math.Max(s[i], 1e-3), Y: float64(i+1) / float64(len(s))})
		}
		pts = append(pts, plotter.XY{X: math.Max(s[len(s)-1], 1e-3), Y: 1})
		line, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", pr.Policy, err)
		}
		line.Color = policyColors[pr.Policy]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (p50 %.0f ms, p99 %.0f ms)", pr.Policy, pr.TTFT.P50, pr.TTFT.P99), line)
	}
	wt, err := p.WriterTo(7*vg.Inch, 4.5*vg.Inch, format)
	if err != nil {
		return fmt.Errorf("render plot: %w", err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	return nil
}

// PlotFormat returns the plot format a file name asks for.
func PlotFormat(path string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg":
		return "svg", nil
	case ".png":
		return "png", nil
	default:
		return "", fmt.Errorf("plot file %q: want a .svg or .png name: %w", path, ErrConfig)
	}
}
