package s3

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Key is one S3 access key: an ID and secret that S3 clients sign with,
// bound to a ddstore client token. The gateway forwards every request signed
// with the key to the cluster with that token, so the cluster grants the
// key exactly the token's role and name prefix.
type Key struct {
	AccessKeyID string    `json:"access_key_id"`
	Secret      string    `json:"secret_access_key"`
	Token       string    `json:"token"`
	Created     time.Time `json:"created"`
	Comment     string    `json:"comment,omitempty"`
}

const keyIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// NewKey makes a random access key (20 characters, as AWS's) and secret (40
// characters of base64) bound to token.
func NewKey(token, comment string) (Key, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return Key{}, errors.New("s3 key: the token is empty")
	}
	const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	return Key{
		AccessKeyID: "DDS" + randomString(keyIDAlphabet, 17),
		Secret:      randomString(secretAlphabet, 40),
		Token:       token,
		Created:     time.Now().UTC().Truncate(time.Second),
		Comment:     comment,
	}, nil
}

// randomString draws n characters of alphabet uniformly.
func randomString(alphabet string, n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, 64)
	limit := 256 - 256%len(alphabet)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

// AppendKey adds k to the keys file at path (one JSON object a line),
// creating it with mode 0600. A file that others may read is refused: it
// holds secrets and tokens.
func AppendKey(path string, k Key) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("s3 keys file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("s3 keys file %s: mode %v lets others read its secrets; chmod 600 it", path, fi.Mode().Perm())
	}
	line, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("s3 keys file: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("s3 keys file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("s3 keys file: %w", err)
	}
	return f.Close()
}

// LoadKeys reads a keys file. A later line for the same access key wins.
func LoadKeys(path string) (map[string]Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("s3 keys file: %w", err)
	}
	defer f.Close()
	keys := map[string]Key{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		var k Key
		if err := json.Unmarshal([]byte(t), &k); err != nil {
			return nil, fmt.Errorf("s3 keys file %s:%d: %w", path, line, err)
		}
		if k.AccessKeyID == "" || k.Secret == "" {
			return nil, fmt.Errorf("s3 keys file %s:%d: a key needs access_key_id and secret_access_key", path, line)
		}
		keys[k.AccessKeyID] = k
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("s3 keys file %s: %w", path, err)
	}
	return keys, nil
}

// keyring holds the keys of a keys file and reads the file again when it
// changed and an unknown key is asked for (a key created while the gateway
// runs works at once).
type keyring struct {
	path string
	mu   sync.Mutex
	keys map[string]Key
	mod  time.Time
}

func newKeyring(path string, keys map[string]Key) *keyring {
	kr := &keyring{path: path, keys: keys}
	if path != "" {
		if fi, err := os.Stat(path); err == nil {
			kr.mod = fi.ModTime()
		}
	}
	return kr
}

func (kr *keyring) get(id string) (Key, bool) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if k, ok := kr.keys[id]; ok {
		return k, true
	}
	if kr.path == "" {
		return Key{}, false
	}
	fi, err := os.Stat(kr.path)
	if err != nil || fi.ModTime().Equal(kr.mod) {
		return Key{}, false
	}
	keys, err := LoadKeys(kr.path)
	if err != nil {
		return Key{}, false
	}
	kr.keys, kr.mod = keys, fi.ModTime()
	k, ok := kr.keys[id]
	return k, ok
}
