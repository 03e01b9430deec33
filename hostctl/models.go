package hostctl

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// model is one model the daemon serves, with what every request for it
// needs precomputed.
type model struct {
	name     string
	spec     kvcache.ModelSpec
	shape    kvcache.Shape
	stitcher *kvcache.Stitcher
	// shared is the salt of content every tenant of the model may reuse.
	shared matcher.Salt
	// fp8 is the first 8 bytes of the fingerprint (the salt's model part).
	fp [kvcache.FingerprintSize]byte
}

// models resolves model names (case-insensitive) and tenant salts.
type models struct {
	byName map[string]*model
	// byFP finds a model from a salt's model part (peer sync, journal).
	byFP map[[8]byte]*model
	// salts caches tenant salts: deriving one hashes the tenant name.
	mu    sync.Mutex
	salts map[saltKey]matcher.Salt
	max   int
}

type saltKey struct {
	model  *model
	tenant string
}

// newModels builds the model set: every built-in preset plus cfg's models.
func newModels(cfg []ModelConfig, maxTenants int) (*models, error) {
	ms := &models{byName: map[string]*model{}, byFP: map[[8]byte]*model{}, salts: map[saltKey]matcher.Salt{}, max: maxTenants}
	for _, p := range kvcache.Presets() {
		if err := ms.add(p.Name, p); err != nil {
			return nil, err
		}
	}
	for i, mc := range cfg {
		spec, err := loadModel(mc)
		if err != nil {
			return nil, fmt.Errorf("models[%d] %s: %w", i, mc.Name, err)
		}
		if err := ms.add(mc.Name, spec); err != nil {
			return nil, fmt.Errorf("models[%d]: %w", i, err)
		}
	}
	return ms, nil
}

func loadModel(mc ModelConfig) (kvcache.ModelSpec, error) {
	var opts kvcache.LoadOptions
	opts.WeightsID = mc.WeightsID
	opts.Name = mc.Name
	if mc.KVDType != "" {
		dt, err := kvcache.ParseDType(mc.KVDType)
		if err != nil {
			return kvcache.ModelSpec{}, err
		}
		opts.KVDType = dt
	}
	switch {
	case mc.Preset != "":
		s, err := kvcache.Preset(mc.Preset)
		if err != nil {
			return s, err
		}
		if opts.KVDType != 0 {
			s.DType = opts.KVDType
		}
		if mc.WeightsID != "" {
			s.WeightsID = mc.WeightsID
		}
		return s, nil
	case mc.HFConfig != "":
		return kvcache.LoadHFConfig(mc.HFConfig, opts)
	case mc.GGUF != "":
		return kvcache.LoadGGUF(mc.GGUF, opts)
	case mc.Llama2C != "":
		return kvcache.LoadLlama2C(mc.Llama2C, opts)
	}
	return kvcache.ModelSpec{}, fmt.Errorf("no model source: %w", ErrConfig)
}

func (ms *models) add(name string, spec kvcache.ModelSpec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("model %s: %w", name, err)
	}
	st, err := kvcache.NewStitcher(&spec)
	if err != nil {
		return fmt.Errorf("model %s: %w", name, err)
	}
	fp := spec.Fingerprint()
	shared, err := matcher.SharedSalt(fp[:])
	if err != nil {
		return fmt.Errorf("model %s: %w", name, err)
	}
	m := &model{name: name, spec: spec, shape: spec.Shape(), stitcher: st, shared: shared, fp: fp}
	key := strings.ToLower(name)
	if _, dup := ms.byName[key]; dup {
		return fmt.Errorf("model %s defined twice: %w", name, ErrConfig)
	}
	ms.byName[key] = m
	var f8 [8]byte
	copy(f8[:], fp[:8])
	if _, dup := ms.byFP[f8]; !dup {
		ms.byFP[f8] = m
	}
	return nil
}

// get returns the model called name.
func (ms *models) get(name string) (*model, error) {
	m, ok := ms.byName[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("model %q (serving %s): %w", name, strings.Join(ms.names(), ", "), ErrUnknownModel)
	}
	return m, nil
}

// bySalt returns the model a salt belongs to.
func (ms *models) bySalt(s matcher.Salt) (*model, bool) {
	m, ok := ms.byFP[s.Model]
	return m, ok
}

// names lists the served models, sorted.
func (ms *models) names() []string {
	out := make([]string, 0, len(ms.byName))
	for _, m := range ms.byName {
		out = append(out, m.name)
	}
	sort.Strings(out)
	return out
}

// salt returns the tenant's salt under m (or the shared salt).
func (ms *models) salt(m *model, tenant string, shared bool) (matcher.Salt, error) {
	if shared {
		return m.shared, nil
	}
	if tenant == "" {
		return matcher.Salt{}, fmt.Errorf("tenant is empty: %w", ErrBadRequest)
	}
	if len(tenant) > 256 {
		return matcher.Salt{}, fmt.Errorf("tenant name of %d bytes, limit 256: %w", len(tenant), ErrBadRequest)
	}
	k := saltKey{m, tenant}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if s, ok := ms.salts[k]; ok {
		return s, nil
	}
	s, err := matcher.NewSalt(m.fp[:], tenant)
	if err != nil {
		return matcher.Salt{}, fmt.Errorf("tenant salt: %w", err)
	}
	// The cache is bounded: past it, salts are derived each time.
	if len(ms.salts) < ms.max {
		ms.salts[k] = s
	}
	return s, nil
}

// checkTokens validates a prompt against the model and the daemon's limits.
func (m *model) checkTokens(toks []uint32, maxTokens int) error {
	if len(toks) == 0 {
		return fmt.Errorf("prompt has no tokens: %w", ErrBadRequest)
	}
	if len(toks) > maxTokens {
		return fmt.Errorf("prompt of %d tokens, limit %d (limits.max_prompt_tokens): %w", len(toks), maxTokens, ErrTooLarge)
	}
	if m.spec.MaxPositions > 0 && len(toks) > m.spec.MaxPositions {
		return fmt.Errorf("prompt of %d tokens, model %s has %d positions: %w", len(toks), m.name, m.spec.MaxPositions, ErrTooLarge)
	}
	if v := m.spec.VocabSize; v > 0 {
		for i, t := range toks {
			if int(t) >= v {
				return fmt.Errorf("token %d at offset %d is outside model %s's vocabulary of %d: %w", t, i, m.name, v, ErrBadRequest)
			}
		}
	}
	return nil
}
