package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/ddstore/ddstore/chunker"
)

const (
	// gridfsDefaultDB is the database OpenGridFS uses when given none.
	gridfsDefaultDB = "ddstore"
	// gridfsBucketName is the name of the GridFS bucket holding the chunks: its
	// collections are chunks.files and chunks.chunks.
	gridfsBucketName = "chunks"
	// gridfsChunkSize is the size of the GridFS chunk documents. FerretDB
	// fails to download files stored with the 255 KiB default.
	gridfsChunkSize = 128 << 10

	// gridfsSlack bounds a stored file beyond MaxRawSize, as localSlack.
	gridfsSlack   = 64 << 10
	gridfsMaxFile = int64(chunker.MaxRawSize + gridfsSlack)
	// gridfsCleanupTimeout bounds the removal of a failed upload.
	gridfsCleanupTimeout = 30 * time.Second
	// gridfsProbeID is the file ID of the upload stream OpenGridFS opens and
	// aborts to let the driver create the GridFS indexes.
	gridfsProbeID = "ddstore-open-probe"
)

// GridFS is a Store keeping chunks in MongoDB (or a server speaking its
// protocol, such as FerretDB) with GridFS: one GridFS file per chunk in the
// bucket "chunks", with _id and filename the hex chunk ID and metadata
// {codec, raw_size}. GridFS writes a file's document after its chunk
// documents, so a file document exists only for a complete upload.
type GridFS struct {
	client *mongo.Client
	db     string
	bucket *mongo.GridFSBucket
	files  *mongo.Collection
	codecs *chunker.Codecs

	// stripes serialise Put and Delete per ID in this process so exactly
	// one concurrent Put of an ID uploads it.
	stripes [256]sync.Mutex
	closed  atomic.Bool
}

var _ Store = (*GridFS)(nil)

// gridfsFile is the part of a chunks.files document Walk reads.
type gridfsFile struct {
	ID     string `bson:"_id"`
	Length int64  `bson:"length"`
}

// OpenGridFS connects to the server at uri and opens the chunk bucket in
// database db ("" means "ddstore"). Writes use the write concern given
// in uri, or else majority with journaling, so that a Put is durable when it
// returns.
func OpenGridFS(ctx context.Context, uri, db string) (*GridFS, error) {
	if db == "" {
		db = gridfsDefaultDB
	}
	opts := options.Client().ApplyURI(uri)
	if opts.WriteConcern == nil {
		journal := true
		opts.SetWriteConcern(&writeconcern.WriteConcern{W: "majority", Journal: &journal})
	}
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("replica: gridfs store: connect: %w", err)
	}
	if err := client.Ping(ctx, readpref.Primary()); err != nil {
		client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("replica: gridfs store: ping %s: %w", db, err)
	}
	d := client.Database(db)
	bucket := d.GridFSBucket(options.GridFSBucket().SetName(gridfsBucketName).SetChunkSizeBytes(gridfsChunkSize))
	g := &GridFS{
		client: client,
		db:     db,
		bucket: bucket,
		files:  bucket.GetFilesCollection(),
		codecs: chunker.NewCodecs(),
	}
	if err := g.prepare(ctx); err != nil {
		client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	return g, nil
}

// prepare lets the driver run its first-write check now, while g is not yet
// shared: the check creates the GridFS indexes (the unique one on
// chunks.chunks {files_id, n} turns a concurrent upload of one ID into a
// duplicate-key error) and records in the bucket, without a lock, that it
// ran. Done here, later uploads only read that flag.
func (g *GridFS) prepare(ctx context.Context) error {
	us, err := g.bucket.OpenUploadStreamWithID(ctx, gridfsProbeID, gridfsProbeID)
	if err != nil {
		return fmt.Errorf("replica: gridfs store: create indexes: %w", err)
	}
	if err := us.Abort(); err != nil {
		return fmt.Errorf("replica: gridfs store: create indexes: %w", err)
	}
	return nil
}

func (g *GridFS) enter(ctx context.Context) error {
	if g.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

func (g *GridFS) stripe(id chunker.ID) *sync.Mutex { return &g.stripes[id[chunker.IDSize-1]] }

// Kind returns "gridfs".
func (g *GridFS) Kind() string { return "gridfs" }

// Has reports whether a complete GridFS file holds the chunk.
func (g *GridFS) Has(ctx context.Context, id chunker.ID) (bool, error) {
	if err := g.enter(ctx); err != nil {
		return false, err
	}
	return g.has(ctx, id)
}

func (g *GridFS) has(ctx context.Context, id chunker.ID) (bool, error) {
	err := g.files.FindOne(ctx, bson.D{{Key: "_id", Value: id.String()}},
		options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return false, nil
	}
	return false, fmt.Errorf("replica: gridfs store: has %s: %w", id, err)
}

// Put uploads c unless a file for c.ID exists. An upload that fails is
// removed, except when it failed because another writer stored the same ID
// at the same time: then Put reports written=false.
func (g *GridFS) Put(ctx context.Context, c chunker.Encoded) (bool, error) {
	if err := g.enter(ctx); err != nil {
		return false, err
	}
	if c.RawSize < 0 || c.RawSize > chunker.MaxRawSize || int64(len(c.Data)) > gridfsMaxFile {
		return false, fmt.Errorf("%w: chunk %s: raw size %d, %d stored bytes", chunker.ErrBadEncoded, c.ID, c.RawSize, len(c.Data))
	}
	mu := g.stripe(c.ID)
	mu.Lock()
	defer mu.Unlock()
	if ok, err := g.has(ctx, c.ID); err != nil || ok {
		return false, err
	}
	err := g.upload(ctx, c)
	if err == nil {
		return true, nil
	}
	if mongo.IsDuplicateKeyError(err) {
		return false, nil
	}
	err = gridfsNoSpace(err)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gridfsCleanupTimeout)
	defer cancel()
	if derr := g.bucket.Delete(cctx, c.ID.String()); derr != nil && !errors.Is(derr, mongo.ErrFileNotFound) {
		return false, fmt.Errorf("replica: gridfs store: put %s: %w (removing the partial upload failed too: %v)", c.ID, err, derr)
	}
	return false, fmt.Errorf("replica: gridfs store: put %s: %w", c.ID, err)
}

// mongoOutOfDiskSpace is MongoDB's error code OutOfDiskSpace.
const mongoOutOfDiskSpace = 14031

// gridfsNoSpace wraps ErrNoSpace around a database error that says its disk
// or quota is full: MongoDB's OutOfDiskSpace code, or the operating
// system's or SQLite's words for it in the message (FerretDB passes those
// on as text).
func gridfsNoSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	var se mongo.ServerError
	if errors.As(err, &se) && se.HasErrorCode(mongoOutOfDiskSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	msg := strings.ToLower(err.Error())
	for _, words := range []string{"no space left on device", "disk quota exceeded", "database or disk is full", "out of disk space"} {
		if strings.Contains(msg, words) {
			return fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
	}
	return noSpace(err)
}

// upload writes c as one GridFS file. It uses an upload stream of its own:
// the bucket's UploadFromStreamWithID reads through a buffer shared by all
// callers, so concurrent uploads would mix their bytes.
func (g *GridFS) upload(ctx context.Context, c chunker.Encoded) error {
	ctx, cancel := context.WithCancel(ctx) // releases the stream's context whatever happens
	defer cancel()
	hexID := c.ID.String()
	meta := bson.D{{Key: "codec", Value: int32(c.Codec)}, {Key: "raw_size", Value: int32(c.RawSize)}}
	us, err := g.bucket.OpenUploadStreamWithID(ctx, hexID, hexID, options.GridFSUpload().SetMetadata(meta))
	if err != nil {
		return err
	}
	if _, err := us.Write(c.Data); err != nil {
		return err
	}
	return us.Close()
}

// Get downloads and verifies the chunk. A copy that fails verification is
// reported with chunker.ErrCorrupt and left in place.
func (g *GridFS) Get(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	if err := g.enter(ctx); err != nil {
		return chunker.Encoded{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ds, err := g.bucket.OpenDownloadStream(ctx, id.String())
	if err != nil {
		if errors.Is(err, mongo.ErrFileNotFound) {
			return chunker.Encoded{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return chunker.Encoded{}, fmt.Errorf("replica: gridfs store: get %s: %w", id, err)
	}
	defer ds.Close()
	c, cerr, err := g.read(ds, id)
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("replica: gridfs store: get %s: %w", id, err)
	}
	if cerr == nil {
		cerr = g.codecs.Verify(c)
	}
	if cerr != nil {
		return chunker.Encoded{}, fmt.Errorf("%w: gridfs store: chunk %s: %w", chunker.ErrCorrupt, id, cerr)
	}
	return c, nil
}

// read takes a downloaded file apart. A malformed file is reported in
// corrupt; err is any other failure.
func (g *GridFS) read(ds *mongo.GridFSDownloadStream, id chunker.ID) (c chunker.Encoded, corrupt, err error) {
	f := ds.GetFile()
	if f.Length < 0 || f.Length > gridfsMaxFile {
		return c, fmt.Errorf("file is %d bytes, outside [0, %d]", f.Length, gridfsMaxFile), nil
	}
	codec, ok := f.Metadata.Lookup("codec").AsInt64OK()
	if !ok || codec < 0 || codec > 255 {
		return c, fmt.Errorf("metadata.codec missing or invalid in %v", f.Metadata), nil
	}
	raw, ok := f.Metadata.Lookup("raw_size").AsInt64OK()
	if !ok || raw < 0 || raw > chunker.MaxRawSize {
		return c, fmt.Errorf("metadata.raw_size missing or invalid in %v", f.Metadata), nil
	}
	buf := make([]byte, f.Length)
	if _, err := io.ReadFull(ds, buf); err != nil {
		if errors.Is(err, mongo.ErrWrongSize) || errors.Is(err, mongo.ErrMissingChunk) ||
			errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return c, err, nil
		}
		return c, nil, err
	}
	return chunker.Encoded{ID: id, RawSize: int(raw), Codec: chunker.Codec(codec), Data: buf}, nil, nil
}

// Delete removes the chunk's file and chunk documents.
func (g *GridFS) Delete(ctx context.Context, id chunker.ID) error {
	if err := g.enter(ctx); err != nil {
		return err
	}
	mu := g.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	if err := g.bucket.Delete(ctx, id.String()); err != nil && !errors.Is(err, mongo.ErrFileNotFound) {
		return fmt.Errorf("replica: gridfs store: delete %s: %w", id, err)
	}
	return nil
}

// Walk calls fn for every file in the bucket whose _id is a chunk ID, with
// its length.
func (g *GridFS) Walk(ctx context.Context, fn func(id chunker.ID, storedSize int64) error) error {
	if err := g.enter(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cur, err := g.files.Find(ctx, bson.D{},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "length", Value: 1}}))
	if err != nil {
		return fmt.Errorf("replica: gridfs store: walk: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		var f gridfsFile
		if err := cur.Decode(&f); err != nil {
			continue // an _id that is not a string is no chunk of ours
		}
		id, err := chunker.ParseID(f.ID)
		if err != nil || id.String() != f.ID {
			continue
		}
		if err := fn(id, f.Length); err != nil {
			return err
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("replica: gridfs store: walk: %w", err)
	}
	return nil
}

// Usage counts the files in the bucket and sums their lengths. It reads
// every file document: FerretDB's $group sums the lengths wrongly (to 0).
func (g *GridFS) Usage(ctx context.Context) (Usage, error) {
	if err := g.enter(ctx); err != nil {
		return Usage{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cur, err := g.files.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "length", Value: 1}}))
	if err != nil {
		return Usage{}, fmt.Errorf("replica: gridfs store: usage: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var u Usage
	for cur.Next(ctx) {
		n, ok := cur.Current.Lookup("length").AsInt64OK()
		if !ok || n < 0 {
			return Usage{}, fmt.Errorf("replica: gridfs store: usage: bad length in %v", cur.Current)
		}
		u.Chunks++
		u.Bytes += uint64(n)
	}
	if err := cur.Err(); err != nil {
		return Usage{}, fmt.Errorf("replica: gridfs store: usage: %w", err)
	}
	return u, nil
}

// Close disconnects from the server. Every later call, Close included,
// returns ErrClosed.
func (g *GridFS) Close() error {
	if g.closed.Swap(true) {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), gridfsCleanupTimeout)
	defer cancel()
	if err := g.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("replica: gridfs store: disconnect: %w", err)
	}
	return nil
}
