package hostctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kvloom/kvloom/hostctl/api"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and client
// certificates for the named tenants into dir.
type testPKI struct{ ca, serverCert, serverKey string }

func newTestPKI(t *testing.T, dir string, clients ...string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvloom test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name string, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(name string, serial int64, server bool) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		if server {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		} else {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	p := testPKI{ca: write("ca.crt", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = issue("kvloomd", 2, true)
	for i, c := range clients {
		issue(c, int64(10+i), false)
	}
	return p
}

func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir, "acme")
	cfg := testConfig(t)
	lis := tcpListener(t)
	cfg.Listen.TCP = lis.Addr().String()
	cfg.Listen.TLSCert, cfg.Listen.TLSKey, cfg.Listen.ClientCA = pki.serverCert, pki.serverKey, pki.ca
	cfg.Tenancy.TenantFromCert = true
	dt := startDaemon(t, cfg)
	serveExtra(t, func(ctx context.Context) error { return dt.d.ServeTLS(ctx, lis) })
	addr := lis.Addr().String()
	req := &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: []uint32{1, 2, 3}}

	conn, err := Dial(addr, DialOptions{CA: pki.ca, Cert: filepath.Join(dir, "acme.crt"), Key: filepath.Join(dir, "acme.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := api.NewKVLoomClient(conn)
	if _, err := c.Lookup(t.Context(), req); err != nil {
		t.Fatalf("acme with its certificate: %v", err)
	}
	_, err = c.Lookup(t.Context(), &api.LookupRequest{Tenant: "globex", Model: "stories260K", Tokens: []uint32{1, 2, 3}})
	wantCode(t, err, codes.PermissionDenied, "client certificate")

	// Without a client certificate the handshake fails.
	anon, err := Dial(addr, DialOptions{CA: pki.ca})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := api.NewKVLoomClient(anon).Lookup(t.Context(), req); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	// The Unix socket is its own access control (file mode): no certificate.
	if _, err := dt.c.Lookup(t.Context(), &api.LookupRequest{Tenant: "globex", Model: "stories260K", Tokens: []uint32{1, 2, 3}}); err != nil {
		t.Fatalf("unix socket: %v", err)
	}
}
