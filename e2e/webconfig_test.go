//go:build linux

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// selfSignedCert writes a self-signed ECDSA P-256 certificate for
// 127.0.0.1, and its key, into dir, and returns the certificate and the
// paths of the two PEM files.
func selfSignedCert(t *testing.T, dir string) (cert *x509.Certificate, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "llama_exporter e2e test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own CA: the client trusts it as a root
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}

// TestWebConfigTLSAndBasicAuth runs llama_exporter with an exporter-toolkit
// web config (TLS with a self-signed certificate generated here, and one
// basic-auth user with a bcrypt hash) and checks, over HTTPS with the
// certificate as the only trusted root:
//   - without credentials, with a wrong password or an unknown user,
//     /metrics, /probe and /-/healthy answer 401 with a Basic challenge;
//   - with the right credentials, /-/healthy and /metrics answer 200, and
//     /probe of the exporter's own reflector answers 200 with probe_success 1;
//   - the server presents the generated certificate, and a client that does
//     not trust it fails the handshake;
//   - plain HTTP to the TLS port gets no metrics: an error, or 400 "Client
//     sent an HTTP request to an HTTPS server".
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	const user, password = "prometheus", "s3cret-llama"
	dir := t.TempDir()
	cert, certFile, keyFile := selfSignedCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := fmt.Sprintf("tls_server_config:\n  cert_file: %q\n  key_file: %q\nbasic_auth_users:\n  %s: %q\n",
		certFile, keyFile, user, hash)
	webFile := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webFile, []byte(webConfig), 0o600); err != nil {
		t.Fatal(err)
	}

	proc := startProcess(t, "llama_exporter", exporterBinary(t), "--log.level=debug", "--log.format=json",
		"--web.listen-address=127.0.0.1:0", "--web.config.file="+webFile,
		"--reflector.listen-address=127.0.0.1:0")
	procs := []*process{proc}
	var web, refl string
	tlsOn := false
	waitFor(t, startTimeout, `llama_exporter to log "Listening on", "TLS is enabled." and "reflector listening"`, procs, func() error {
		for _, line := range proc.log.lines() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch rec["msg"] {
			case "Listening on":
				if s, ok := rec["address"].(string); ok && web == "" {
					web = s
				}
			case "TLS is enabled.":
				tlsOn = true
			case "reflector listening":
				if s, ok := rec["addresses"].(string); ok {
					if f := strings.Fields(strings.Trim(s, "[]")); len(f) > 0 {
						refl = f[0]
					}
				}
			}
		}
		if web == "" || refl == "" || !tlsOn {
			return fmt.Errorf("web address %q, TLS enabled %v, reflector %q", web, tlsOn, refl)
		}
		return nil
	})

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots}},
		Timeout:   30 * time.Second,
	}
	base := "https://" + web
	type answer struct {
		code      int
		body      string
		challenge string
		peer      *x509.Certificate
	}
	do := func(path string, auth func(*http.Request)) (answer, error) {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			return answer{}, err
		}
		if auth != nil {
			auth(req)
		}
		resp, err := client.Do(req)
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return answer{}, err
		}
		a := answer{code: resp.StatusCode, body: string(b), challenge: resp.Header.Get("WWW-Authenticate")}
		if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
			a.peer = resp.TLS.PeerCertificates[0]
		}
		return a, nil
	}
	creds := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	right := creds(user, password)

	waitFor(t, startTimeout, base+"/-/healthy to answer 200 with credentials", procs, func() error {
		a, err := do("/-/healthy", right)
		if err != nil {
			return err
		}
		if a.code != http.StatusOK {
			return fmt.Errorf("status %d: %s", a.code, a.body)
		}
		return nil
	})

	probe := "/probe?" + url.Values{"target": {refl}}.Encode()
	for _, tc := range []struct {
		name string
		auth func(*http.Request)
	}{
		{"no credentials", nil},
		{"wrong password", creds(user, password+"x")},
		{"empty password", creds(user, "")},
		{"unknown user", creds("nobody", password)},
		{"user name case", creds(strings.ToUpper(user), password)},
	} {
		for _, path := range []string{"/metrics", probe, "/-/healthy"} {
			a, err := do(path, tc.auth)
			if err != nil {
				t.Errorf("%s, GET %s: %v", tc.name, path, err)
				continue
			}
			if a.code != http.StatusUnauthorized {
				t.Errorf("%s, GET %s: status %d, want 401; body %.200q", tc.name, path, a.code, a.body)
			}
			if !strings.HasPrefix(a.challenge, "Basic") {
				t.Errorf("%s, GET %s: WWW-Authenticate %q, want a Basic challenge", tc.name, path, a.challenge)
			}
			if strings.Contains(a.body, "llama_") || strings.Contains(a.body, "probe_success") {
				t.Errorf("%s, GET %s: metrics leaked in a %d answer: %.200q", tc.name, path, a.code, a.body)
			}
		}
	}

	a, err := do("/metrics", right)
	if err != nil {
		t.Fatal(err)
	}
	if a.code != http.StatusOK || !strings.Contains(a.body, "llama_reflector_up 1") {
		t.Errorf("GET /metrics with credentials: status %d, want 200 with llama_reflector_up 1; body %.300q", a.code, a.body)
	}
	if a.peer == nil || !a.peer.Equal(cert) {
		t.Errorf("the server did not present the generated certificate: %v", a.peer)
	}
	// The first scrape of a new session waits for its first probe to be
	// decided; on loopback it is answered.
	waitFor(t, 30*time.Second, "GET "+probe+" with credentials to answer 200 with probe_success 1", procs, func() error {
		a, err := do(probe, right)
		if err != nil {
			return err
		}
		if a.code != http.StatusOK {
			return fmt.Errorf("status %d: %.300q", a.code, a.body)
		}
		samples, err := parseExposition([]byte(a.body))
		if err != nil {
			return err
		}
		v, err := single(samples, "probe_success")
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("probe_success %v", v)
		}
		return nil
	})

	// A client that does not trust the certificate must not get through.
	untrusting := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	if resp, err := untrusting.Get(base + "/-/healthy"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without the self-signed root got status %d: want a certificate verification error", resp.StatusCode)
	} else {
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Logf("untrusting client failed with %v (not an unknown-authority error)", err)
		}
	}

	// Plain HTTP to the TLS port, even with the right credentials.
	plain := newHTTPClient(nil)
	req, err := http.NewRequest(http.MethodGet, "http://"+web+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	resp, err := plain.Do(req)
	if err != nil {
		t.Logf("plain HTTP to the TLS port: %v", err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("plain HTTP to the TLS port: %s %q", resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(strings.ToLower(string(body)), "http request to an https server") {
		t.Errorf("plain HTTP to the TLS port: status %d %.300q; want an error or 400 \"Client sent an HTTP request to an HTTPS server\"", resp.StatusCode, body)
	}
}
