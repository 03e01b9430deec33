package hostctl

import (
	"fmt"
	"sync"
)

// quotas bound requests in flight (daemon-wide and per tenant) and the KV
// bytes each tenant has stored. Full limits refuse at once: nothing queues.
type quotas struct {
	maxInflight    int
	tenantInflight int
	tenantBytes    int64
	maxTenants     int
	m              *metrics

	mu       sync.Mutex
	inflight int
	tenants  map[string]*tenantUse
}

type tenantUse struct {
	inflight int
	stored   int64
}

func newQuotas(l LimitsConfig, m *metrics) *quotas {
	return &quotas{
		maxInflight:    l.MaxInflight,
		tenantInflight: l.TenantInflight,
		tenantBytes:    int64(l.TenantStoredBytes),
		maxTenants:     l.MaxTenants,
		m:              m,
		tenants:        map[string]*tenantUse{},
	}
}

// tenant returns (creating) a tenant's record; q.mu is held.
func (q *quotas) tenant(name string) (*tenantUse, error) {
	if u, ok := q.tenants[name]; ok {
		return u, nil
	}
	if len(q.tenants) >= q.maxTenants {
		q.m.quotaRejects.WithLabelValues("tenants").Inc()
		return nil, fmt.Errorf("%d tenants tracked (limits.max_tenants): %w", q.maxTenants, ErrOverloaded)
	}
	u := &tenantUse{}
	q.tenants[name] = u
	return u, nil
}

// acquire admits one request of tenant ("" for calls without one) or
// refuses it; release must follow an admitted request.
func (q *quotas) acquire(tenant string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.inflight >= q.maxInflight {
		q.m.quotaRejects.WithLabelValues("inflight").Inc()
		return fmt.Errorf("%d requests in flight (limits.max_inflight): %w", q.inflight, ErrOverloaded)
	}
	if tenant != "" {
		u, err := q.tenant(tenant)
		if err != nil {
			return err
		}
		if u.inflight >= q.tenantInflight {
			q.m.quotaRejects.WithLabelValues("tenant_inflight").Inc()
			return fmt.Errorf("tenant has %d requests in flight (limits.tenant_inflight): %w", u.inflight, ErrQuota)
		}
		u.inflight++
	}
	q.inflight++
	q.m.inflight.Set(float64(q.inflight))
	return nil
}

func (q *quotas) release(tenant string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight--
	q.m.inflight.Set(float64(q.inflight))
	if u, ok := q.tenants[tenant]; ok {
		u.inflight--
		q.forget(tenant, u)
	}
}

// forget drops an idle tenant with nothing stored; q.mu is held.
func (q *quotas) forget(name string, u *tenantUse) {
	if u.inflight == 0 && u.stored <= 0 {
		delete(q.tenants, name)
	}
}

// reserve charges n stored bytes to tenant, or refuses.
func (q *quotas) reserve(tenant string, n int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	u, err := q.tenant(tenant)
	if err != nil {
		return err
	}
	if u.stored+n > q.tenantBytes {
		q.m.quotaRejects.WithLabelValues("tenant_bytes").Inc()
		q.forget(tenant, u)
		return fmt.Errorf("tenant has %d bytes stored, %d more would pass limits.tenant_stored_bytes %d: %w", u.stored, n, q.tenantBytes, ErrQuota)
	}
	u.stored += n
	return nil
}

// refund gives n stored bytes back to tenant (evicted, or never written).
func (q *quotas) refund(tenant string, n int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if u, ok := q.tenants[tenant]; ok {
		u.stored = max(u.stored-n, 0)
		q.forget(tenant, u)
	}
}
