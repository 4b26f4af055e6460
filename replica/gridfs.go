package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
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
	// gridfsAwaitFile bounds the wait for the file of a concurrent writer
	// of the same chunk.
	gridfsAwaitFile = 5 * time.Second
	// gridfsKeyedLayout marks a file whose chunk documents have _id
	// "<file _id>.<n>" (metadata.layout).
	gridfsKeyedLayout = 2
	// gridfsProbeID is the file ID of the upload stream OpenGridFS opens and
	// aborts to let the driver create the GridFS indexes.
	gridfsProbeID = "ddstore-open-probe"
)

// GridFS is a Store keeping chunks in MongoDB (or a server speaking its
// protocol, such as FerretDB) with GridFS: one GridFS file per chunk in the
// bucket "chunks", with _id and filename the hex chunk ID and metadata
// {codec, raw_size, layout}. The file's document is written after its chunk
// documents, so a file document exists only for a complete upload.
//
// The store writes the GridFS documents itself, in GridFS's layout (any
// GridFS reader reads them through the {files_id, n} index), but gives each
// chunk document a predictable _id, "<chunk ID>.<n>" (metadata.layout 2), so
// that every lookup it makes is by _id: a primary-key lookup on MongoDB and
// on FerretDB alike. (The driver's GridFS reader finds chunk documents by
// {files_id, n}, which FerretDB's SQLite backend answers by scanning the
// collection: a one-chunk read took 9 s with 100 MiB stored.) FerretDB
// v1.24.2 answers even an _id lookup with a scan of the collection, on its
// SQLite and its PostgreSQL backend alike, whatever the filter's shape; on
// PostgreSQL, the GIN indexes that ferretpg.EnsureIndexes makes (`ddstore
// gridfs index`, or a node's --ferretdb-postgres) make each lookup an index
// lookup. Files stored before, with driver-chosen
// _ids, are still read and deleted through the driver.
type GridFS struct {
	client *mongo.Client
	db     string
	bucket *mongo.GridFSBucket
	files  *mongo.Collection
	chunks *mongo.Collection
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
		chunks: bucket.GetChunksCollection(),
		codecs: chunker.NewCodecs(),
	}
	if err := g.prepare(ctx); err != nil {
		client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	return g, nil
}

// prepare lets the driver run its first-write check now, while g is not yet
// shared: the check creates the GridFS indexes, which other GridFS readers
// use and which the driver's reader of files stored before the keyed layout
// uses, and records in the bucket, without a lock, that it ran.
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
// removed, except when it failed because another writer is storing the same
// ID at the same time: then Put waits for that writer's file and reports
// written=false. Chunk documents a dead writer left behind (no file document
// follows them) are removed and the upload is tried once more.
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
	for attempt := 1; ; attempt++ {
		err := g.upload(ctx, c)
		if err == nil {
			return true, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return false, g.removeFailed(ctx, c.ID, gridfsNoSpace(err))
		}
		// Another writer holds the ID: wait for its file document.
		if ok, err := g.awaitFile(ctx, c.ID); err != nil || ok {
			return false, err
		}
		if attempt == 2 {
			return false, fmt.Errorf("replica: gridfs store: put %s: chunk documents of another upload are in the way and no file follows them", c.ID)
		}
		if err := g.deletePieces(ctx, c.ID, c.Data); err != nil {
			return false, fmt.Errorf("replica: gridfs store: put %s: removing a dead upload's chunk documents: %w", c.ID, err)
		}
	}
}

// awaitFile polls for a file document that a concurrent writer is about to
// write, for up to gridfsAwaitFile.
func (g *GridFS) awaitFile(ctx context.Context, id chunker.ID) (bool, error) {
	deadline := time.Now().Add(gridfsAwaitFile)
	for {
		ok, err := g.has(ctx, id)
		if err != nil || ok || time.Now().After(deadline) {
			return ok, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// removeFailed removes what a failed upload of id wrote and returns err.
func (g *GridFS) removeFailed(ctx context.Context, id chunker.ID, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gridfsCleanupTimeout)
	defer cancel()
	if derr := g.deleteFile(cctx, id); derr != nil {
		return fmt.Errorf("replica: gridfs store: put %s: %w (removing the partial upload failed too: %v)", id, err, derr)
	}
	return fmt.Errorf("replica: gridfs store: put %s: %w", id, err)
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

// pieceID is the _id of chunk document n of file id in the keyed layout.
func pieceID(id string, n int) string { return id + "." + strconv.Itoa(n) }

// pieces is the number of chunk documents of a file of length bytes.
func pieces(length int64, chunkSize int64) int {
	return int((length + chunkSize - 1) / chunkSize)
}

// upload writes c as one GridFS file in the keyed layout: its chunk
// documents, then its file document.
func (g *GridFS) upload(ctx context.Context, c chunker.Encoded) error {
	hexID := c.ID.String()
	n := pieces(int64(len(c.Data)), gridfsChunkSize)
	docs := make([]any, n)
	for i := range n {
		end := min((i+1)*gridfsChunkSize, len(c.Data))
		docs[i] = bson.D{{Key: "_id", Value: pieceID(hexID, i)}, {Key: "files_id", Value: hexID}, {Key: "n", Value: int32(i)},
			{Key: "data", Value: bson.Binary{Data: c.Data[i*gridfsChunkSize : end]}}}
	}
	if n > 0 {
		if _, err := g.chunks.InsertMany(ctx, docs); err != nil {
			return err
		}
	}
	meta := bson.D{{Key: "codec", Value: int32(c.Codec)}, {Key: "raw_size", Value: int32(c.RawSize)}, {Key: "layout", Value: int32(gridfsKeyedLayout)}}
	_, err := g.files.InsertOne(ctx, bson.D{{Key: "_id", Value: hexID}, {Key: "length", Value: int64(len(c.Data))},
		{Key: "chunkSize", Value: int32(gridfsChunkSize)}, {Key: "uploadDate", Value: time.Now()},
		{Key: "filename", Value: hexID}, {Key: "metadata", Value: meta}})
	return err
}

// deletePieces removes the keyed chunk documents a file of data's length
// would have.
func (g *GridFS) deletePieces(ctx context.Context, id chunker.ID, data []byte) error {
	hexID := id.String()
	for i := range pieces(int64(len(data)), gridfsChunkSize) {
		if _, err := g.chunks.DeleteOne(ctx, bson.D{{Key: "_id", Value: pieceID(hexID, i)}}); err != nil {
			return err
		}
	}
	return nil
}

// gridfsFileDoc is a file document as Get and Delete read it.
type gridfsFileDoc struct {
	Length    int64    `bson:"length"`
	ChunkSize int64    `bson:"chunkSize"`
	Metadata  bson.Raw `bson:"metadata"`
}

func (f gridfsFileDoc) keyed() bool {
	l, ok := f.Metadata.Lookup("layout").AsInt64OK()
	return ok && l == gridfsKeyedLayout
}

// fileDoc reads id's file document; ErrNotFound if there is none.
func (g *GridFS) fileDoc(ctx context.Context, id chunker.ID) (gridfsFileDoc, error) {
	var f gridfsFileDoc
	err := g.files.FindOne(ctx, bson.D{{Key: "_id", Value: id.String()}}).Decode(&f)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return f, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return f, err
}

// Get downloads and verifies the chunk. A copy that fails verification is
// reported with chunker.ErrCorrupt and left in place.
func (g *GridFS) Get(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	if err := g.enter(ctx); err != nil {
		return chunker.Encoded{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f, err := g.fileDoc(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return chunker.Encoded{}, err
	}
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("replica: gridfs store: get %s: %w", id, err)
	}
	var c chunker.Encoded
	var cerr error
	if f.keyed() {
		c, cerr, err = g.readKeyed(ctx, id, f)
	} else {
		c, cerr, err = g.readDriver(ctx, id)
	}
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

// readKeyed reads a keyed-layout file, one chunk document by _id at a time.
// A malformed file is reported in corrupt; err is any other failure.
func (g *GridFS) readKeyed(ctx context.Context, id chunker.ID, f gridfsFileDoc) (c chunker.Encoded, corrupt, err error) {
	codec, raw, corrupt := fileMeta(f.Length, f.Metadata)
	if corrupt != nil {
		return c, corrupt, nil
	}
	if f.ChunkSize <= 0 || f.ChunkSize > gridfsMaxFile {
		return c, fmt.Errorf("chunkSize %d", f.ChunkSize), nil
	}
	hexID := id.String()
	buf := make([]byte, 0, f.Length)
	n := pieces(f.Length, f.ChunkSize)
	for i := range n {
		var doc struct {
			Data bson.Binary `bson:"data"`
		}
		err := g.chunks.FindOne(ctx, bson.D{{Key: "_id", Value: pieceID(hexID, i)}}).Decode(&doc)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return c, fmt.Errorf("chunk document %d of %d missing", i, n), nil
		}
		if err != nil {
			return c, nil, err
		}
		want := min(f.ChunkSize, f.Length-int64(i)*f.ChunkSize)
		if int64(len(doc.Data.Data)) != want {
			return c, fmt.Errorf("chunk document %d is %d bytes, want %d", i, len(doc.Data.Data), want), nil
		}
		buf = append(buf, doc.Data.Data...)
	}
	return chunker.Encoded{ID: id, RawSize: raw, Codec: codec, Data: buf}, nil, nil
}

// fileMeta checks a file document's length and metadata.
func fileMeta(length int64, meta bson.Raw) (codec chunker.Codec, raw int, corrupt error) {
	if length < 0 || length > gridfsMaxFile {
		return 0, 0, fmt.Errorf("file is %d bytes, outside [0, %d]", length, gridfsMaxFile)
	}
	cd, ok := meta.Lookup("codec").AsInt64OK()
	if !ok || cd < 0 || cd > 255 {
		return 0, 0, fmt.Errorf("metadata.codec missing or invalid in %v", meta)
	}
	r, ok := meta.Lookup("raw_size").AsInt64OK()
	if !ok || r < 0 || r > chunker.MaxRawSize {
		return 0, 0, fmt.Errorf("metadata.raw_size missing or invalid in %v", meta)
	}
	return chunker.Codec(cd), int(r), nil
}

// readDriver reads a file stored before the keyed layout, through the
// driver's GridFS reader.
func (g *GridFS) readDriver(ctx context.Context, id chunker.ID) (c chunker.Encoded, corrupt, err error) {
	ds, err := g.bucket.OpenDownloadStream(ctx, id.String())
	if errors.Is(err, mongo.ErrFileNotFound) {
		return c, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return c, nil, err
	}
	defer ds.Close()
	return g.read(ds, id)
}

// read takes a file downloaded by the driver apart. A malformed file is
// reported in corrupt; err is any other failure.
func (g *GridFS) read(ds *mongo.GridFSDownloadStream, id chunker.ID) (c chunker.Encoded, corrupt, err error) {
	f := ds.GetFile()
	codec, raw, corrupt := fileMeta(f.Length, f.Metadata)
	if corrupt != nil {
		return c, corrupt, nil
	}
	buf := make([]byte, f.Length)
	if _, err := io.ReadFull(ds, buf); err != nil {
		if errors.Is(err, mongo.ErrWrongSize) || errors.Is(err, mongo.ErrMissingChunk) ||
			errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return c, err, nil
		}
		return c, nil, err
	}
	return chunker.Encoded{ID: id, RawSize: raw, Codec: codec, Data: buf}, nil, nil
}

// Delete removes the chunk's file and chunk documents, the file document
// first, so that the chunk is gone at once.
func (g *GridFS) Delete(ctx context.Context, id chunker.ID) error {
	if err := g.enter(ctx); err != nil {
		return err
	}
	mu := g.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	if err := g.deleteFile(ctx, id); err != nil {
		return fmt.Errorf("replica: gridfs store: delete %s: %w", id, err)
	}
	return nil
}

// deleteFile removes id's file document and chunk documents, in either
// layout; a file that is not there is no error.
func (g *GridFS) deleteFile(ctx context.Context, id chunker.ID) error {
	f, err := g.fileDoc(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case !f.keyed() || f.ChunkSize <= 0 || f.Length < 0 || f.Length > gridfsMaxFile:
		if err := g.bucket.Delete(ctx, id.String()); err != nil && !errors.Is(err, mongo.ErrFileNotFound) {
			return err
		}
		return nil
	}
	if _, err := g.files.DeleteOne(ctx, bson.D{{Key: "_id", Value: id.String()}}); err != nil {
		return err
	}
	hexID := id.String()
	for i := range pieces(f.Length, f.ChunkSize) {
		if _, err := g.chunks.DeleteOne(ctx, bson.D{{Key: "_id", Value: pieceID(hexID, i)}}); err != nil {
			return err
		}
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
