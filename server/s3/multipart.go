package s3

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Multipart uploads. Each upload is a directory of hidden files under its
// bucket: "<bucket>/.s3-multipart/<id>/upload" records the key and
// metadata, and each part is a file of its own ("part.00001"), stored
// through the client's put, so a part uploaded again sends only the chunks
// the cluster lacks. Complete commits one manifest whose chunk list is the
// parts' chunk lists end to end (no chunk bytes move) and deletes the part
// files. The whole-file BLAKE3 of the result is not known from the parts'
// hashes, and the catalog requires it (every download checks it), so
// Complete reads the parts back once, each verified against its own hash,
// to compute it.

const (
	// minPartSize is the least size of a part that is not the last.
	minPartSize   = 5 << 20
	maxPartNumber = 10000
)

func uploadDir(bucket, id string) string { return bucket + "/" + MultipartDir + id + "/" }

func partName(bucket, id string, n int) string {
	return fmt.Sprintf("%spart.%05d", uploadDir(bucket, id), n)
}

func newUploadID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// checkUploadID refuses an upload ID that is not one of ours (it becomes
// part of a name).
func checkUploadID(id string) *Error {
	if len(id) != 32 {
		return errorf("NoSuchUpload", "The specified upload does not exist.")
	}
	if _, err := hex.DecodeString(id); err != nil {
		return errorf("NoSuchUpload", "The specified upload does not exist.")
	}
	return nil
}

// uploadRecord reads an upload's record and checks it is for key.
func uploadRecord(ctx context.Context, c *client.Client, bucket, key, id string) (*pb.FileManifest, error) {
	if err := checkUploadID(id); err != nil {
		return nil, err
	}
	m, err := c.Stat(ctx, uploadDir(bucket, id)+"upload", pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		if isNotFound(err) {
			if berr := requireBucket(ctx, c, bucket); berr != nil {
				return nil, berr
			}
			return nil, errorf("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
		}
		return nil, clusterError(err, "NoSuchUpload")
	}
	if key != "" && m.GetMetadata()[metaKey] != key {
		return nil, errorf("NoSuchUpload", "The specified upload does not exist for this key.")
	}
	return m, nil
}

func (g *Gateway) createUpload(ctx context.Context, req *request) error {
	if err := requireBucket(ctx, req.c, req.bucket); err != nil {
		return err
	}
	id := newUploadID()
	meta := objectMetadata(req.r.Header)
	meta[metaKey] = req.key
	meta[metaInitiated] = g.cfg.Now().UTC().Format(time.RFC3339Nano)
	if _, err := req.c.Put(ctx, uploadDir(req.bucket, id)+"upload", strings.NewReader(""), client.PutOptions{Metadata: meta}); err != nil {
		return clusterError(err, "NoSuchBucket")
	}
	return req.writeXML(http.StatusOK, initiateMultipartUploadResult{Xmlns: s3NS, Bucket: req.bucket, Key: req.key, UploadID: id})
}

func partNumber(v string) (int, *Error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPartNumber {
		return 0, errorf("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
	}
	return n, nil
}

func (g *Gateway) uploadPart(ctx context.Context, req *request) error {
	q := req.r.URL.Query()
	n, perr := partNumber(q.Get("partNumber"))
	if perr != nil {
		return perr
	}
	id := q.Get("uploadId")
	if _, err := uploadRecord(ctx, req.c, req.bucket, req.key, id); err != nil {
		return err
	}
	etag, _, err := g.upload(ctx, req, partName(req.bucket, id, n), map[string]string{})
	if err != nil {
		return clusterError(err, "NoSuchUpload")
	}
	req.w.Header().Set("ETag", `"`+etag+`"`)
	req.w.WriteHeader(http.StatusOK)
	return nil
}

// uploadParts lists an upload's part files, in part order.
func uploadParts(ctx context.Context, c *client.Client, bucket, id string) ([]*pb.FileInfo, error) {
	l, err := c.List(ctx, client.ListOptions{Prefix: uploadDir(bucket, id) + "part."})
	if err != nil {
		return nil, clusterError(err, "NoSuchUpload")
	}
	return l.Files, nil
}

func partNumberOf(name string) int {
	i := strings.LastIndex(name, "part.")
	n, _ := strconv.Atoi(name[i+len("part."):])
	return n
}

func (g *Gateway) completeUpload(ctx context.Context, req *request) error {
	id := req.r.URL.Query().Get("uploadId")
	var cm completeMultipartUpload
	if err := req.readXML(&cm); err != nil {
		return err
	}
	if len(cm.Parts) == 0 {
		return errorf("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema: no parts.")
	}
	rec, err := uploadRecord(ctx, req.c, req.bucket, req.key, id)
	if err != nil {
		return err
	}
	// Every part, checked, in order.
	for i, p := range cm.Parts {
		if i > 0 && p.PartNumber <= cm.Parts[i-1].PartNumber {
			return errorf("InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be specified in order by part number.")
		}
	}
	parts := make([]*pb.FileManifest, len(cm.Parts))
	for i, p := range cm.Parts {
		if _, perr := partNumber(strconv.Itoa(p.PartNumber)); perr != nil {
			return errorf("InvalidPart", "One or more of the specified parts could not be found: part %d", p.PartNumber)
		}
		m, err := req.c.Stat(ctx, partName(req.bucket, id, p.PartNumber), pb.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			if isNotFound(err) {
				return errorf("InvalidPart", "One or more of the specified parts could not be found: part %d was not uploaded", p.PartNumber)
			}
			return clusterError(err, "NoSuchUpload")
		}
		if strings.Trim(p.ETag, `" `) != etagOf(m) {
			return errorf("InvalidPart", "One or more of the specified parts could not be found: part %d's entity tag does not match", p.PartNumber)
		}
		if i < len(cm.Parts)-1 && m.GetSize() < minPartSize {
			return errorf("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size: part %d is %d bytes; every part but the last must be at least 5 MiB", p.PartNumber, m.GetSize())
		}
		parts[i] = m
	}
	// One manifest: the parts' chunk lists end to end.
	meta := map[string]string{}
	for k, v := range rec.GetMetadata() {
		if k != metaKey && k != metaInitiated {
			meta[k] = v
		}
	}
	m := &pb.FileManifest{Name: req.bucket + "/" + req.key, Metadata: meta}
	sums := md5.New()
	var offset uint64
	for _, p := range parts {
		raw, _ := hex.DecodeString(etagOf(p))
		sums.Write(raw)
		for _, ref := range p.GetChunks() {
			m.Chunks = append(m.Chunks, &pb.ChunkRef{Id: ref.GetId(), Offset: offset + ref.GetOffset(), RawSize: ref.GetRawSize(), StoredSize: ref.GetStoredSize()})
		}
		offset += p.GetSize()
		m.StoredSize += p.GetStoredSize()
	}
	m.Size = offset
	etag := fmt.Sprintf("%s-%d", hex.EncodeToString(sums.Sum(nil)), len(parts))
	meta[metaETag] = etag
	// Reading the parts back takes a while for a large object: as S3 does,
	// the answer starts now (200 and the XML declaration) and whitespace
	// follows every few seconds, so that clients do not time out; the
	// result, or an error document, comes at the end (SDKs and awscli read
	// an error inside a 200 answer to this call).
	ka := startKeepAlive(req.w, keepAliveEvery)
	err = g.assemble(ctx, req.c, m, parts)
	ka.stop()
	if err != nil {
		e := clusterError(err, "InvalidPart")
		g.log.Warn("s3: complete multipart upload failed", "bucket", req.bucket, "key", req.key, "upload", id, "err", err)
		out, _ := xml.Marshal(errorBody{Code: e.Code, Message: e.Message, Resource: req.r.URL.Path, RequestID: req.id})
		req.w.Write(out)
		return nil
	}
	// The parts are referenced by the object now; their files go.
	if err := removeUpload(ctx, req.c, req.bucket, id); err != nil {
		g.log.Warn("s3: could not remove a completed upload's part files", "upload", id, "err", err)
	}
	out, _ := xml.Marshal(completeMultipartUploadResult{Xmlns: s3NS, Location: "/" + req.bucket + "/" + req.key, Bucket: req.bucket, Key: req.key, ETag: `"` + etag + `"`})
	req.w.Write(out)
	return nil
}

// assemble computes the whole-file hash of the concatenated parts (read
// back, each checked against its own hash on the way) and commits m.
func (g *Gateway) assemble(ctx context.Context, c *client.Client, m *pb.FileManifest, parts []*pb.FileManifest) error {
	h := blake3.New()
	for _, p := range parts {
		if _, err := c.Get(ctx, p.GetName(), h, client.GetOptions{}); err != nil {
			return fmt.Errorf("read back part %s: %w", p.GetName(), err)
		}
	}
	m.Blake3 = h.Sum(nil)
	if _, err := c.Commit(ctx, m, client.CommitOptions{Overwrite: true}); err != nil {
		return clusterError(err, "NoSuchUpload")
	}
	return nil
}

// keepAliveEvery is how often a long CompleteMultipartUpload sends a space.
const keepAliveEvery = 5 * time.Second

// keepAlive writes a space to an answer at an interval until stopped.
type keepAlive struct {
	done chan struct{}
	exit chan struct{}
}

// startKeepAlive begins a 200 XML answer on w and keeps it alive.
func startKeepAlive(w *responseWriter, every time.Duration) *keepAlive {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, xml.Header)
	w.Flush()
	k := &keepAlive{done: make(chan struct{}), exit: make(chan struct{})}
	go func() {
		defer close(k.exit)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-k.done:
				return
			case <-t.C:
				io.WriteString(w, " ")
				w.Flush()
			}
		}
	}()
	return k
}

// stop ends the keep-alive; the answer may be written on once it returns.
func (k *keepAlive) stop() {
	close(k.done)
	<-k.exit
}

// removeUpload deletes an upload's part files, then its record.
func removeUpload(ctx context.Context, c *client.Client, bucket, id string) error {
	parts, err := uploadParts(ctx, c, bucket, id)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := c.Delete(ctx, p.GetName()); err != nil && !isNotFound(err) {
			return err
		}
	}
	if err := c.Delete(ctx, uploadDir(bucket, id)+"upload"); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func (g *Gateway) abortUpload(ctx context.Context, req *request) error {
	id := req.r.URL.Query().Get("uploadId")
	if _, err := uploadRecord(ctx, req.c, req.bucket, req.key, id); err != nil {
		return err
	}
	if err := removeUpload(ctx, req.c, req.bucket, id); err != nil {
		return clusterError(err, "NoSuchUpload")
	}
	req.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) listParts(ctx context.Context, req *request) error {
	q := req.r.URL.Query()
	id := q.Get("uploadId")
	if _, err := uploadRecord(ctx, req.c, req.bucket, req.key, id); err != nil {
		return err
	}
	maxParts := 1000
	if v := q.Get("max-parts"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errorf("InvalidArgument", "max-parts must be a non-negative integer")
		}
		maxParts = min(n, 1000)
	}
	marker := 0
	if v := q.Get("part-number-marker"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errorf("InvalidArgument", "part-number-marker must be a non-negative integer")
		}
		marker = n
	}
	files, err := uploadParts(ctx, req.c, req.bucket, id)
	if err != nil {
		return err
	}
	res := listPartsResult{Xmlns: s3NS, Bucket: req.bucket, Key: req.key, UploadID: id, PartNumberMarker: marker, MaxParts: maxParts, StorageClass: "STANDARD"}
	for _, f := range files {
		n := partNumberOf(f.GetName())
		if n <= marker {
			continue
		}
		if len(res.Parts) == maxParts {
			res.IsTruncated = true
			break
		}
		m, err := req.c.Stat(ctx, f.GetName(), pb.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return clusterError(err, "NoSuchUpload")
		}
		res.Parts = append(res.Parts, partInfo{PartNumber: n, LastModified: s3Time(time.Unix(0, m.GetCreatedUnixNano())), ETag: `"` + etagOf(m) + `"`, Size: int64(m.GetSize())})
		res.NextPartNumberMarker = n
	}
	return req.writeXML(http.StatusOK, res)
}

func (g *Gateway) listUploads(ctx context.Context, req *request) error {
	if err := requireBucket(ctx, req.c, req.bucket); err != nil {
		return err
	}
	q := req.r.URL.Query()
	prefix := q.Get("prefix")
	l, err := req.c.List(ctx, client.ListOptions{Prefix: req.bucket + "/" + MultipartDir})
	if err != nil {
		return clusterError(err, "NoSuchBucket")
	}
	res := listMultipartUploadsResult{Xmlns: s3NS, Bucket: req.bucket, Prefix: prefix, MaxUploads: 1000}
	for _, f := range l.Files {
		if !strings.HasSuffix(f.GetName(), "/upload") {
			continue
		}
		m, err := req.c.Stat(ctx, f.GetName(), pb.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return clusterError(err, "NoSuchUpload")
		}
		key := m.GetMetadata()[metaKey]
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		id := strings.TrimSuffix(strings.TrimPrefix(f.GetName(), req.bucket+"/"+MultipartDir), "/upload")
		res.Uploads = append(res.Uploads, uploadInfo{Key: key, UploadID: id, Initiated: s3Time(time.Unix(0, m.GetCreatedUnixNano())), StorageClass: "STANDARD"})
	}
	return req.writeXML(http.StatusOK, res)
}
