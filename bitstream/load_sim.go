package bitstream

import (
	"context"
	"errors"
	"fmt"
)

// SimConfig is what a sim image sets on the simulated accelerator.
type SimConfig struct {
	Image    ImageRef
	Matcher  MatcherParams
	Pipeline Pipeline
	// Params are all of the manifest's parameters, the pipeline's and any
	// others, for simulator features this package does not name.
	Params []Param
}

// SimTarget is the simulated accelerator as the sim loader sees it. The
// simulator (nic/simnic) implements it; bitstream cannot import it.
type SimTarget interface {
	// ConfigureSim switches the simulator to cfg and returns once cfg is in
	// effect. On error the previous configuration must stay in effect.
	ConfigureSim(ctx context.Context, cfg SimConfig) error
}

// SimOptions configure a SimLoader.
type SimOptions struct {
	// Target is the simulator to configure. Required.
	Target SimTarget
	// Part is the simulator's part name, checked against the manifest's
	// target.part when that is set; zero means "simnic".
	Part string
}

// SimLoader configures the simulated accelerator from sim images. The
// simulator has no device tree, so it takes an interface instead of a root
// path.
type SimLoader struct {
	opts SimOptions
}

var _ Loader = (*SimLoader)(nil)

// NewSimLoader returns a loader for sim images.
func NewSimLoader(opts SimOptions) (*SimLoader, error) {
	if opts.Target == nil {
		return nil, errors.New("new sim loader: Target is required")
	}
	if opts.Part == "" {
		opts.Part = "simnic"
	}
	return &SimLoader{opts: opts}, nil
}

// Name returns "sim".
func (l *SimLoader) Name() string { return "sim" }

// Check verifies kind, part and the pipeline parameters.
func (l *SimLoader) Check(_ context.Context, img *Image) error {
	m := img.manifest
	err := checkIdentity(m, identity{Kind: KindSim, Part: l.opts.Part})
	if m.Kind == KindSim {
		if _, perr := PipelineFromParams(m.Params); perr != nil {
			err = errors.Join(err, fmt.Errorf("%w: pipeline: %w", ErrIncompatible, perr))
		}
	}
	if err != nil {
		return fmt.Errorf("check image %s for the simulator: %w", img, err)
	}
	return nil
}

// Load hands the image's configuration to the simulator.
func (l *SimLoader) Load(ctx context.Context, img *Image) error {
	m := img.manifest
	p, err := PipelineFromParams(m.Params)
	if err != nil {
		return fmt.Errorf("load image %s into the simulator: %w: %w", img, err, ErrTargetUnchanged)
	}
	cfg := SimConfig{Image: img.Ref(), Matcher: m.Matcher, Pipeline: p, Params: m.Clone().Params}
	if err := l.opts.Target.ConfigureSim(ctx, cfg); err != nil {
		return fmt.Errorf("configure simulator with %s: %w: %w", img, err, ErrTargetUnchanged)
	}
	return nil
}
