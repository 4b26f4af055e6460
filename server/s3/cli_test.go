package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/server/s3"
)

// The real S3 clients, from Debian's packages (scripts/test-deps.sh
// installs them): by path, so that a pip or pyenv awscli on PATH is not
// the one tested.
const (
	awsCLI = "/usr/bin/aws"
	rclone = "/usr/bin/rclone"
	s3cmd  = "/usr/bin/s3cmd"
)

// cliEnv is a home directory configured for the three clients with key k.
type cliEnv struct {
	t    *testing.T
	e    *env
	home string
	env  []string
}

func newCLIEnv(t *testing.T, e *env, k s3.Key) *cliEnv {
	t.Helper()
	for _, bin := range []string{awsCLI, rclone, s3cmd} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: run scripts/test-deps.sh (make test does)", bin)
		}
	}
	home := t.TempDir()
	hostPort := strings.TrimPrefix(e.url, "http://")
	files := map[string]string{
		".aws/config":      "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
		".aws/credentials": fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", k.AccessKeyID, k.Secret),
		"rclone.conf": fmt.Sprintf("[dd]\ntype = s3\nprovider = Other\naccess_key_id = %s\nsecret_access_key = %s\nendpoint = %s\nregion = us-east-1\nforce_path_style = true\n",
			k.AccessKeyID, k.Secret, e.url),
		".s3cfg": fmt.Sprintf("[default]\naccess_key = %s\nsecret_key = %s\nhost_base = %s\nhost_bucket = %s\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n",
			k.AccessKeyID, k.Secret, hostPort, hostPort),
	}
	for name, content := range files {
		p := filepath.Join(home, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &cliEnv{t: t, e: e, home: home, env: []string{
		"HOME=" + home, "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
		"AWS_CONFIG_FILE=" + filepath.Join(home, ".aws/config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, ".aws/credentials"),
		"AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true",
	}}
}

// run runs a client command and returns its output; it fails the test if
// the command fails.
func (c *cliEnv) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.try(name, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cliEnv) try(name string, args ...string) (string, error) {
	switch name {
	case awsCLI:
		args = append([]string{"--endpoint-url", c.e.url}, args...)
	case rclone:
		args = append([]string{"--config", filepath.Join(c.home, "rclone.conf")}, args...)
	case s3cmd:
		args = append([]string{"-c", filepath.Join(c.home, ".s3cfg")}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	cmd.Dir = c.home
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// bigSize is the size of the aws s3 cp test file: 1 GiB (the size issue 13
// names; about 40 s up and down here), or DDSTORE_S3_CP_MIB MiB.
func bigSize() int {
	if v, err := strconv.Atoi(os.Getenv("DDSTORE_S3_CP_MIB")); err == nil && v > 0 {
		return v << 20
	}
	return 1 << 30
}

func writeRandomFile(t *testing.T, path string, size int, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const block = 8 << 20
	for off := 0; off < size; off += block {
		if _, err := f.Write(randomBytes(min(block, size-off), seed+uint64(off))); err != nil {
			t.Fatal(err)
		}
	}
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fa, fb) {
		t.Fatalf("%s (%d bytes) and %s (%d bytes) differ", a, len(fa), b, len(fb))
	}
}

func TestAWSCLI(t *testing.T) {
	e := needEnv(t)
	c := newCLIEnv(t, e, e.admin)
	c.run(awsCLI, "s3", "mb", "s3://awscli")
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	size := bigSize()
	writeRandomFile(t, big, size, 100)
	start := time.Now()
	c.run(awsCLI, "s3", "cp", big, "s3://awscli/data/big.bin")
	up := time.Since(start)
	start = time.Now()
	c.run(awsCLI, "s3", "cp", "s3://awscli/data/big.bin", filepath.Join(dir, "big.back"))
	down := time.Since(start)
	t.Logf("aws s3 cp of %d MiB: up %v (%.0f MB/s), down %v (%.0f MB/s)", size>>20, up.Round(time.Millisecond), float64(size)/up.Seconds()/1e6, down.Round(time.Millisecond), float64(size)/down.Seconds()/1e6)
	sameFiles(t, big, filepath.Join(dir, "big.back"))
	head := c.run(awsCLI, "s3api", "head-object", "--bucket", "awscli", "--key", "data/big.bin")
	if !strings.Contains(head, `"ContentLength": `+strconv.Itoa(size)) || !strings.Contains(head, `-`) {
		t.Fatalf("head-object of the multipart upload:\n%s", head)
	}
	// A range GET.
	rng := filepath.Join(dir, "range.bin")
	out := c.run(awsCLI, "s3api", "get-object", "--bucket", "awscli", "--key", "data/big.bin", "--range", "bytes=100000000-100000999", rng)
	if !strings.Contains(out, "bytes 100000000-100000999/"+strconv.Itoa(size)) {
		t.Fatalf("get-object --range:\n%s", out)
	}
	got, _ := os.ReadFile(rng)
	whole, _ := os.ReadFile(big)
	if !bytes.Equal(got, whole[100000000:100001000]) {
		t.Fatal("the range differs")
	}
	whole = nil
	if out, err := c.try(awsCLI, "s3api", "get-object", "--bucket", "awscli", "--key", "data/big.bin", "--range", fmt.Sprintf("bytes=%d-", size), rng); err == nil || !strings.Contains(out, "InvalidRange") {
		t.Fatalf("get-object with a range past the end: %v\n%s", err, out)
	}
	if out, err := c.try(awsCLI, "s3api", "head-object", "--bucket", "awscli", "--key", "none"); err == nil || !strings.Contains(out, "404") {
		t.Fatalf("head-object of a missing key: %v\n%s", err, out)
	}
	ls := c.run(awsCLI, "s3", "ls", "s3://awscli/data/")
	if !strings.Contains(ls, strconv.Itoa(size)+" big.bin") {
		t.Fatalf("aws s3 ls:\n%s", ls)
	}
	if ls := c.run(awsCLI, "s3", "ls"); !strings.Contains(ls, "awscli") {
		t.Fatalf("aws s3 ls (buckets):\n%s", ls)
	}

	// sync a tree twice: the second transfers nothing.
	tree := filepath.Join(dir, "tree")
	for i, name := range []string{"a.txt", "sub/b.bin", "sub/deeper/c.bin", "sub/with space+plus=é.txt", "e~1.bin"} {
		p := filepath.Join(tree, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		writeRandomFile(t, p, 1000+i*300000, uint64(200+i))
	}
	first := c.run(awsCLI, "s3", "sync", tree, "s3://awscli/tree")
	if n := strings.Count(first, "upload:"); n != 5 {
		t.Fatalf("first sync uploaded %d files; want 5:\n%s", n, first)
	}
	if second := c.run(awsCLI, "s3", "sync", tree, "s3://awscli/tree"); strings.TrimSpace(second) != "" {
		t.Fatalf("second sync transferred something:\n%s", second)
	}
	back := filepath.Join(dir, "tree.back")
	c.run(awsCLI, "s3", "sync", "s3://awscli/tree", back)
	sameFiles(t, filepath.Join(tree, "sub/deeper/c.bin"), filepath.Join(back, "sub/deeper/c.bin"))
	sameFiles(t, filepath.Join(tree, "sub/with space+plus=é.txt"), filepath.Join(back, "sub/with space+plus=é.txt"))
	c.run(awsCLI, "s3", "rm", "--recursive", "s3://awscli/tree")
	if ls, _ := c.try(awsCLI, "s3", "ls", "s3://awscli/tree/"); strings.TrimSpace(ls) != "" {
		t.Fatalf("after rm --recursive:\n%s", ls)
	}
}

func TestRclone(t *testing.T) {
	e := needEnv(t)
	c := newCLIEnv(t, e, e.admin)
	c.run(rclone, "mkdir", "dd:rclone")
	src := filepath.Join(t.TempDir(), "src")
	for i, name := range []string{"one.bin", "two/three.bin", "two/four.txt", "five/six/seven (7)+ü.bin"} {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		writeRandomFile(t, p, 5000+i*1500000, uint64(300+i))
	}
	c.run(rclone, "copy", src, "dd:rclone/backup")
	// rclone check compares MD5s: the ETags the gateway computed.
	out := c.run(rclone, "check", src, "dd:rclone/backup")
	if !strings.Contains(out, "0 differences found") || !strings.Contains(out, "4 matching files") || strings.Contains(out, "size-only") || strings.Contains(out, "no hashes") {
		t.Fatalf("rclone check:\n%s", out)
	}
	if out, err := c.try(rclone, "check", "--download", src, "dd:rclone/backup"); err != nil {
		t.Fatalf("rclone check --download: %v\n%s", err, out)
	}
	// The MD5s rclone compares are the ETags the gateway computed.
	md5s := c.run(rclone, "md5sum", "dd:rclone/backup")
	local := c.run(rclone, "md5sum", src)
	if strings.Count(md5s, "\n") != 4 || sortedLines(md5s) != sortedLines(local) {
		t.Fatalf("rclone md5sum of the bucket:\n%s\nof the files:\n%s", md5s, local)
	}
	// A changed file is found.
	writeRandomFile(t, filepath.Join(src, "two/four.txt"), 1000, 999)
	if out, err := c.try(rclone, "check", src, "dd:rclone/backup"); err == nil {
		t.Fatalf("rclone check passed with a changed file:\n%s", out)
	}
}

func TestS3cmd(t *testing.T) {
	e := needEnv(t)
	c := newCLIEnv(t, e, e.admin)
	c.run(s3cmd, "mb", "s3://s3cmd")
	dir := t.TempDir()
	p := filepath.Join(dir, "file.bin")
	writeRandomFile(t, p, 3<<20+5, 400)
	c.run(s3cmd, "put", p, "s3://s3cmd/x/file.bin")
	if ls := c.run(s3cmd, "ls", "s3://s3cmd/x/"); !strings.Contains(ls, "s3://s3cmd/x/file.bin") {
		t.Fatalf("s3cmd ls:\n%s", ls)
	}
	if ls := c.run(s3cmd, "ls"); !strings.Contains(ls, "s3://s3cmd") {
		t.Fatalf("s3cmd ls (buckets):\n%s", ls)
	}
	c.run(s3cmd, "get", "s3://s3cmd/x/file.bin", filepath.Join(dir, "file.back"))
	sameFiles(t, p, filepath.Join(dir, "file.back"))
	// A multipart put (s3cmd's chunk size is 15 MiB by default; 5 here).
	bigp := filepath.Join(dir, "big.bin")
	writeRandomFile(t, bigp, 12<<20, 401)
	c.run(s3cmd, "put", "--multipart-chunk-size-mb=5", bigp, "s3://s3cmd/big.bin")
	c.run(s3cmd, "get", "s3://s3cmd/big.bin", filepath.Join(dir, "big.back"))
	sameFiles(t, bigp, filepath.Join(dir, "big.back"))
	c.run(s3cmd, "del", "s3://s3cmd/x/file.bin", "s3://s3cmd/big.bin")
	if ls := c.run(s3cmd, "ls", "--recursive", "s3://s3cmd"); strings.TrimSpace(ls) != "" {
		t.Fatalf("after del:\n%s", ls)
	}
	c.run(s3cmd, "rb", "s3://s3cmd")
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
