package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ddstore/ddstore/chunker"
)

// migrateBatch bounds the bytes of chunk files read before one sync makes
// them durable in a pack and they are removed.
const migrateBatch = 64 << 20

// migrate moves the chunk files of Local's per-file layout (dir/00 to
// dir/ff) into packs. Each batch of files is verified, appended, synced and
// only then removed; a corrupt file is moved to quarantine. A crash leaves
// every chunk in a file, a durable pack, or both; the next open goes on.
func (p *Pack) migrate(ctx context.Context) error {
	var moved int64
	announced := false
	start := time.Now()
	for b := range 256 {
		name := hex.EncodeToString([]byte{byte(b)})
		fan := filepath.Join(p.dir, name)
		ents, err := os.ReadDir(fan)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("replica: pack store: migrate %s: %w", fan, err)
		}
		var batch []string
		var size int64
		flush := func() error {
			n, err := p.migrateFiles(ctx, batch)
			moved += int64(n)
			batch, size = batch[:0], 0
			if err != nil {
				return fmt.Errorf("replica: pack store: migrate the chunk files of %s into packs: %w", fan, err)
			}
			return nil
		}
		for _, e := range ents {
			n := e.Name()
			if !e.Type().IsRegular() || len(n) != 2*chunker.IDSize || n[:2] != name {
				continue
			}
			if id, err := chunker.ParseID(n); err != nil || id.String() != n {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			if !announced {
				p.log.Warn("migrating chunk files of the per-file layout into packs", "dir", p.dir)
				announced = true
			}
			batch = append(batch, filepath.Join(fan, n))
			size += info.Size()
			if size >= migrateBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
		if err := syncDir(fan); err != nil {
			return fmt.Errorf("replica: pack store: %w", err)
		}
		// Gone if empty; stray files keep it (and are left alone).
		os.Remove(fan)
	}
	if moved > 0 {
		if err := syncDir(p.dir); err != nil {
			return fmt.Errorf("replica: pack store: %w", err)
		}
		p.stats.migrated.Add(moved)
		p.log.Warn("migrated chunk files into packs", "dir", p.dir, "chunks", moved, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// migrateFiles appends the chunk files at paths to the packs, syncs, then
// removes them.
func (p *Pack) migrateFiles(ctx context.Context, paths []string) (int, error) {
	if len(paths) == 0 {
		return 0, nil
	}
	type added struct {
		id  chunker.ID
		pf  *packFile
		loc packLoc
	}
	var adds []added
	var done []string
	seen := map[chunker.ID]bool{}
	fail := func(err error) (int, error) {
		for _, a := range adds {
			p.endPut(a.pf)
		}
		return 0, err
	}
	for _, path := range paths {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		id, _ := chunker.ParseID(filepath.Base(path))
		b, err := os.ReadFile(path)
		if err != nil {
			return fail(err)
		}
		c, corrupt := parseChunkFile(b, id)
		if corrupt == nil {
			corrupt = p.codecs.Verify(c)
		}
		if corrupt != nil {
			dst := filepath.Join(p.quarantine, id.String()+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
			if err := os.Rename(path, dst); err != nil {
				return fail(err)
			}
			p.log.Warn("quarantined a corrupt chunk file while migrating", "id", id, "to", dst, "corruption", corrupt)
			continue
		}
		done = append(done, path)
		sh := p.shard(id)
		if _, ok := sh.index[id]; ok || seen[id] {
			continue // moved before a crash, or stored again since
		}
		seen[id] = true
		loc, pf, _, err := p.appendChunk(c)
		if err != nil {
			return fail(err)
		}
		adds = append(adds, added{id, pf, loc})
	}
	if err := p.barrier(); err != nil {
		return fail(err)
	}
	for _, a := range adds {
		sh := p.shard(a.id)
		sh.mu.Lock()
		sh.index[a.id] = a.loc
		a.pf.live.Add(int64(a.loc.len))
		p.chunks.Add(1)
		p.bytes.Add(int64(a.loc.len))
		sh.mu.Unlock()
		p.endPut(a.pf)
	}
	for _, path := range done {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return len(adds), err
		}
	}
	return len(adds), nil
}

// parseChunkFile parses a chunk file of Local's format (see local.go).
func parseChunkFile(b []byte, id chunker.ID) (chunker.Encoded, error) {
	if len(b) < localHeaderLen || int64(len(b)) > localMaxFile {
		return chunker.Encoded{}, fmt.Errorf("file is %d bytes, outside [%d, %d]", len(b), localHeaderLen, localMaxFile)
	}
	if !bytes.Equal(b[:len(localMagic)], []byte(localMagic)) {
		return chunker.Encoded{}, fmt.Errorf("bad magic %q", b[:len(localMagic)])
	}
	raw := binary.BigEndian.Uint32(b[len(localMagic)+1:])
	if raw > chunker.MaxRawSize {
		return chunker.Encoded{}, fmt.Errorf("header declares %d raw bytes (limit %d)", raw, chunker.MaxRawSize)
	}
	return chunker.Encoded{ID: id, RawSize: int(raw), Codec: chunker.Codec(b[len(localMagic)]), Data: b[localHeaderLen:]}, nil
}
