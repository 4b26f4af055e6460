package s3_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/s3"
	"github.com/prometheus/client_golang/prometheus"
)

// env is a real 3-node cluster (mutual TLS) and a gateway in front of it,
// shared by the tests of this package that need them.
type env struct {
	cl        *localcluster.Cluster
	gw        *s3.Gateway
	url       string
	reg       *prometheus.Registry
	keysFile  string
	admin     s3.Key // admin role, every name
	reader    s3.Key // read role, every name
	weather   s3.Key // write role, names under weather/
	weather26 s3.Key // write role, names under weather/2026/ (inside the bucket weather)
}

// shared is set by TestMain when the cluster runs (not under -race).
var shared *env

func TestMain(m *testing.M) {
	if raceEnabled || os.Getenv("DDSTORE_S3_NO_CLUSTER") != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ddstore-s3-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	e, err := startEnv(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the cluster and the gateway:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	shared = e
	code := m.Run()
	e.gw.Close()
	e.cl.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startEnv(dir string) (*env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Fast: true})
	if err != nil {
		return nil, err
	}
	e := &env{cl: cl, reg: prometheus.NewRegistry(), keysFile: dir + "/s3-keys.json"}
	for _, k := range []struct {
		dst    *s3.Key
		role   auth.Role
		prefix string
	}{{&e.admin, auth.RoleAdmin, ""}, {&e.reader, auth.RoleRead, ""}, {&e.weather, auth.RoleWrite, "weather/"}, {&e.weather26, auth.RoleWrite, "weather/2026/"}} {
		tok, err := cl.Token(k.role, k.prefix, time.Hour)
		if err != nil {
			cl.Close()
			return nil, err
		}
		if *k.dst, err = s3.NewKey(tok, k.role.String()); err != nil {
			cl.Close()
			return nil, err
		}
		if err := s3.AppendKey(e.keysFile, *k.dst); err != nil {
			cl.Close()
			return nil, err
		}
	}
	e.gw, err = s3.New(s3.Config{
		Addrs: cl.Addrs(), ClientOptions: cl.ClientOptions(), TLS: true, KeysFile: e.keysFile,
		AnonymousRead: []string{"public"}, Registry: e.reg,
	})
	if err != nil {
		cl.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cl.Close()
		return nil, err
	}
	go (&http.Server{Handler: e.gw, ReadHeaderTimeout: 30 * time.Second}).Serve(ln)
	e.url = "http://" + ln.Addr().String()
	return e, nil
}

// needEnv returns the shared cluster and gateway, or skips under the race
// detector (where they are not started: the tests would take minutes).
func needEnv(t *testing.T) *env {
	t.Helper()
	if shared == nil {
		if raceEnabled {
			t.Skip("a real cluster behind the gateway is too slow under the race detector")
		}
		t.Fatal("the shared cluster did not start")
	}
	return shared
}

// sdk returns an aws-sdk-go-v2 S3 client signing with k.
func (e *env) sdk(k s3.Key) *awss3.Client {
	return awss3.New(awss3.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(e.url),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.Secret, ""),
		RetryMaxAttempts: 1,
	})
}

// storedBytes sums the bytes in every node's store: what the cluster has
// received and kept.
func (e *env) storedBytes(t *testing.T) int64 {
	t.Helper()
	c, err := e.cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, node := range st.GetNodes() {
		n += int64(node.GetStoredBytes())
	}
	return n
}
