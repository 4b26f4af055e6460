package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	// uploadWindow is how many chunks of one upload are verified and stored
	// at once.
	uploadWindow = 8
	// downloadWindow is how many chunks a download reads ahead of the one
	// it sends.
	downloadWindow = 4
	// commitChecks is how many times a commit checks its chunks when
	// garbage collections keep finishing between check and commit.
	commitChecks = 5
	listDefault  = 1000
	listMax      = 10000
)

type filesService struct {
	pb.UnimplementedFilesServer
	n *Node
}

// Upload verifies each chunk against its ID and stores it on R nodes. The
// first bad chunk ends the stream with InvalidArgument; chunks stored before
// it stay (they are content-addressed and unreferenced until a commit names
// them).
func (f *filesService) Upload(stream pb.Files_UploadServer) error {
	n := f.n
	if r, err := n.route(stream.Context()); err != nil || r.peer != nil {
		if err != nil {
			return err
		}
		return n.proxyUpload(r, stream)
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	peers, copies := n.placement()
	sess := n.repl.NewSession(ctx, n.cfg.ID, peers, copies)
	defer sess.Close()

	var (
		received, stored, bytes atomic.Uint64
		once                    sync.Once
		firstErr                error
		wg                      sync.WaitGroup
		sem                     = make(chan struct{}, uploadWindow)
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	for ctx.Err() == nil {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(err)
			break
		}
		c, err := replica.FromWire(req.GetChunk())
		if err != nil {
			fail(status.Errorf(codes.InvalidArgument, "chunk %d of this stream: %v", received.Load(), err))
			break
		}
		received.Add(1)
		bytes.Add(uint64(len(c.Data)))
		release, err := n.streamMem.hold(ctx, len(c.Data))
		if err != nil {
			fail(err)
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			release()
			break
		}
		wg.Go(func() {
			defer func() { <-sem; release() }()
			if err := n.codecs.Verify(c); err != nil {
				fail(status.Errorf(codes.InvalidArgument, "chunk %s rejected, nothing stored for it: %v", c.ID, err))
				return
			}
			// Pinned before any copy is written: a sweep that lists a
			// copy already lists the pin too.
			n.pins.add(c.ID)
			written, err := sess.Store(ctx, c)
			if err != nil {
				fail(err)
				return
			}
			if written {
				stored.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return toStatus(firstErr)
	}
	if err := sess.Close(); err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.UploadResponse{
		ChunksReceived: received.Load(), ChunksStored: stored.Load(), BytesReceived: bytes.Load(),
	})
}

// MissingChunks answers which IDs are held by fewer than R nodes. An
// upload's first call names the file instead, which is checked as its commit
// will be, so that a bad name costs no chunk.
func (f *filesService) MissingChunks(ctx context.Context, req *pb.MissingChunksRequest) (*pb.MissingChunksResponse, error) {
	if r, err := f.n.route(ctx); err != nil || r.peer != nil {
		if err != nil {
			return nil, err
		}
		return proxyUnary(ctx, f.n, r, func(ctx context.Context, fc pb.FilesClient) (*pb.MissingChunksResponse, error) {
			return fc.MissingChunks(ctx, req)
		})
	}
	resp := &pb.MissingChunksResponse{}
	if in := req.GetIntent(); in != nil {
		if err := catalog.ValidateFile(in.GetName(), in.GetDate(), in.GetMetadata()); err != nil {
			return nil, toStatus(err)
		}
		if in.GetOverwrite() {
			// The version the overwrite is to replace: a commit that lands
			// first makes this one fail instead of silently losing.
			if err := f.n.readBarrier(ctx, pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil {
				return nil, toStatus(err)
			}
			f.n.fsm.Read(func(s *catalog.State) {
				m, _ := s.File(in.GetName())
				resp.Current = catalog.VersionOf(m)
			})
		}
	}
	if len(req.GetIds()) == 0 {
		return resp, nil
	}
	if len(req.GetIds()) > replica.MaxHasBatch {
		return nil, status.Errorf(codes.InvalidArgument, "asked about %d chunks; at most %d per call", len(req.GetIds()), replica.MaxHasBatch)
	}
	ids := make([]chunker.ID, len(req.GetIds()))
	for i, b := range req.GetIds() {
		id, err := chunker.IDFromBytes(b)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "id %d: %v", i, err)
		}
		ids[i] = id
	}
	missing, err := f.n.underReplicated(ctx, ids)
	if err != nil {
		return nil, toStatus(err)
	}
	present := make([]chunker.ID, 0, len(ids)-len(missing))
	for j, i := 0, 0; i < len(ids); i++ {
		if j < len(missing) && missing[j] == i {
			resp.Missing = append(resp.Missing, ids[i][:])
			j++
			continue
		}
		present = append(present, ids[i])
	}
	// The client will not send these: a collection must not take them
	// before its commit.
	f.n.pins.add(present...)
	return resp, nil
}

// underReplicated returns the indexes of ids held by fewer than R nodes.
// A chunk that some node still holds, but fewer than R do (a holder died
// mid-upload, say), is copied from a good copy to more nodes here, so the
// client need not send its bytes again.
func (n *Node) underReplicated(ctx context.Context, ids []chunker.ID) ([]int, error) {
	peers, copies := n.placement()
	holds, live, err := n.holdings(ctx, peers, ids, true)
	if err != nil {
		return nil, err
	}
	var (
		missing []int
		mu      sync.Mutex
		wg      sync.WaitGroup
		sem     = make(chan struct{}, uploadWindow)
	)
	for i, id := range ids {
		switch {
		case len(holds[i]) >= copies:
		case len(holds[i]) == 0:
			missing = append(missing, i)
		default:
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, _, err := n.restore(ctx, id, holds[i], live, copies); err != nil {
					n.log.Warn("could not restore a chunk's copies; asking the client for it", "chunk", id, "err", err)
					mu.Lock()
					missing = append(missing, i)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	slices.Sort(missing)
	return missing, ctx.Err()
}

// Commit lists a file atomically: only when every chunk it names is held by R
// nodes, through one Raft command.
func (f *filesService) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	if r, err := f.n.route(ctx); err != nil || r.peer != nil {
		if err != nil {
			return nil, err
		}
		return f.n.proxyCommit(ctx, r, req)
	}
	return f.n.commit(ctx, req)
}

// maxManifestChunks bounds the chunk list of one file: 4 million chunks,
// about 4 TiB at the default chunk size, about 400 MB of manifest in memory
// while it is committed.
const maxManifestChunks = 4_000_000

// CommitParts commits a manifest too large for one message, sent in pages.
func (f *filesService) CommitParts(stream pb.Files_CommitPartsServer) error {
	req, err := recvCommitParts(stream)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	r, err := f.n.route(ctx)
	if err != nil {
		return err
	}
	var resp *pb.CommitResponse
	if r.peer != nil {
		resp, err = f.n.proxyCommit(ctx, r, req)
	} else {
		resp, err = f.n.commit(ctx, req)
	}
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// recvCommitParts gathers a CommitParts stream into one request.
func recvCommitParts(stream pb.Files_CommitPartsServer) (*pb.CommitRequest, error) {
	req, err := stream.Recv()
	if err == io.EOF {
		return nil, status.Error(codes.InvalidArgument, "commit stream carried no manifest")
	}
	if err != nil {
		return nil, err
	}
	m := req.GetManifest()
	if m == nil {
		return nil, status.Error(codes.InvalidArgument, "commit has no manifest")
	}
	for {
		part, err := stream.Recv()
		if err == io.EOF {
			return req, nil
		}
		if err != nil {
			return nil, err
		}
		if part.GetManifest().GetName() != m.GetName() {
			return nil, status.Errorf(codes.InvalidArgument, "a part of the commit of %q names %q", m.GetName(), part.GetManifest().GetName())
		}
		if len(m.Chunks)+len(part.GetManifest().GetChunks()) > maxManifestChunks {
			return nil, status.Errorf(codes.InvalidArgument, "file %q has more than %d chunks; the limit is %d", m.GetName(), maxManifestChunks, maxManifestChunks)
		}
		m.Chunks = append(m.Chunks, part.GetManifest().GetChunks()...)
	}
}

// commit checks that every chunk the manifest names is held by R nodes and
// lists the file through one Raft command.
func (n *Node) commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	m := req.GetManifest()
	if m == nil {
		return nil, status.Error(codes.InvalidArgument, "commit has no manifest")
	}
	if err := catalog.ValidateManifest(m); err != nil {
		return nil, toStatus(err)
	}
	ids, at := distinctChunks(m)
	// A garbage collection that finishes between the check that every chunk
	// is stored and the commit may have deleted chunks the check found, and
	// cleared their marks: the command carries the count of finished
	// collections read before the check and is refused if it moved; then
	// check again.
	var seen uint64
	n.fsm.Read(func(s *catalog.State) { seen = s.Collections() })
	// Chunks sent with the commit are on R nodes once stored: when they are
	// all the file has, storing them is the first check (seen was read
	// before it, and the copies are pinned until the commit).
	carried := false
	if len(req.GetChunks()) > 0 {
		all, err := n.storeWithCommit(ctx, ids, req.GetChunks())
		if err != nil {
			return nil, toStatus(err)
		}
		carried = all
	}
	m = proto.Clone(m).(*pb.FileManifest)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			if err := n.readBarrier(ctx, pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil {
				return nil, toStatus(err)
			}
			n.fsm.Read(func(s *catalog.State) { seen = s.Collections() })
		}
		var missing []int
		if attempt > 1 || !carried {
			var err error
			if missing, err = n.underReplicated(ctx, ids); err != nil {
				return nil, toStatus(err)
			}
		}
		if len(missing) > 0 {
			// A retried commit whose first try landed (the client lost the
			// answer, with the node it asked) finds its copies counted
			// short when a holder died since: the file is committed.
			if done := n.committedAlready(ctx, m); done != nil {
				return &pb.CommitResponse{Manifest: pageless(done)}, nil
			}
			first := ids[missing[0]]
			return nil, status.Errorf(codes.FailedPrecondition,
				"cannot commit %q: %d of its %d distinct chunks are not stored on enough nodes (first: chunk %d, %s); upload them, then commit again",
				m.GetName(), len(missing), len(ids), at[missing[0]], first)
		}
		m.CreatedUnixNano = time.Now().UnixNano()
		applied, err := n.propose(ctx, &pb.Command{Op: &pb.Command_PutFile{PutFile: &pb.PutFile{
			Manifest: m, Overwrite: req.GetOverwrite(), CollectionsSeen: &seen, Replaces: req.GetReplaces(), RequestId: req.GetRequestId(),
		}}})
		if err = toStatus(err); hasReason(err, pb.ReasonCollectedSinceCheck) && attempt < commitChecks {
			continue
		}
		if err != nil {
			return nil, err
		}
		n.pins.release(ids)
		n.peers.announce(ctx) // peers look here for the name before they say NotFound
		return &pb.CommitResponse{Manifest: pageless(applied)}, nil
	}
}

// storeWithCommit verifies the chunks a commit carries and stores each on R
// nodes, as Upload does. Every one must be named by the manifest (ids).
//
// It reports whether the chunks sent were every chunk the manifest names.
func (n *Node) storeWithCommit(ctx context.Context, ids []chunker.ID, wire []*pb.Chunk) (all bool, err error) {
	named := make(map[chunker.ID]bool, len(ids))
	for _, id := range ids {
		named[id] = true
	}
	sent := make(map[chunker.ID]bool, len(wire))
	peers, copies := n.placement()
	sess := n.repl.NewCommitSession(ctx, n.cfg.ID, peers, copies)
	defer sess.Close()
	for i, w := range wire {
		c, err := replica.FromWire(w)
		if err != nil {
			return false, status.Errorf(codes.InvalidArgument, "chunk %d sent with the commit: %v", i, err)
		}
		if !named[c.ID] {
			return false, status.Errorf(codes.InvalidArgument, "chunk %s sent with the commit is not in its manifest", c.ID)
		}
		if err := n.codecs.Verify(c); err != nil {
			return false, status.Errorf(codes.InvalidArgument, "chunk %s rejected, nothing stored for it: %v", c.ID, err)
		}
		n.pins.add(c.ID) // before any copy is written, as in Upload
		if _, err := sess.Store(ctx, c); err != nil {
			return false, err
		}
		sent[c.ID] = true
	}
	if err := sess.Close(); err != nil {
		return false, err
	}
	// Store places min(R, nodes it knows) copies: count it as the check
	// only when that is R.
	return len(sent) == len(ids) && len(peers)+1 >= copies, nil
}

// committedAlready returns the file m names if the catalog, read
// linearizably, holds exactly m's content under that name; else nil.
func (n *Node) committedAlready(ctx context.Context, m *pb.FileManifest) *pb.FileManifest {
	if n.readBarrier(ctx, pb.Consistency_CONSISTENCY_LINEARIZABLE) != nil {
		return nil
	}
	var cur *pb.FileManifest
	n.fsm.Read(func(s *catalog.State) { cur, _ = s.File(m.GetName()) })
	if cur != nil && catalog.SameContent(cur, m, m.GetDate() != "") {
		return cur
	}
	return nil
}

// pageless returns m, or only its header when its chunk list would not fit
// in one message: the caller sent the list.
func pageless(m *pb.FileManifest) *pb.FileManifest {
	if len(m.GetChunks()) > pb.ManifestPage {
		return pb.WithoutChunks(m)
	}
	return m
}

// distinctChunks returns the chunk IDs a manifest names, each once, in file
// order, with the index of its first place in the file.
func distinctChunks(m *pb.FileManifest) (ids []chunker.ID, at []int) {
	seen := make(map[chunker.ID]bool, len(m.GetChunks()))
	for i, c := range m.GetChunks() {
		if id := chunker.ID(c.GetId()); !seen[id] {
			seen[id] = true
			ids, at = append(ids, id), append(at, i)
		}
	}
	return ids, at
}

// lookup returns a file's manifest after a read barrier of the asked
// consistency.
func (n *Node) lookup(ctx context.Context, name string, c pb.Consistency) (*pb.FileManifest, error) {
	if err := catalog.ValidateName(name); err != nil {
		return nil, err
	}
	if err := n.readBarrier(ctx, c); err != nil {
		return nil, err
	}
	var m *pb.FileManifest
	n.fsm.Read(func(s *catalog.State) { m, _ = s.File(name) })
	if m == nil {
		return nil, fmt.Errorf("%w: no file named %q", catalog.ErrNotFound, name)
	}
	return m, nil
}

// Download streams the file's manifest, then its chunks from start_index on,
// reading a few chunks ahead. Every chunk sent has been verified against its
// ID; a chunk no node of this cluster holds intact is fetched from a peer
// cluster that may hold it, and failing that ends the stream with DataLoss.
// A file the catalog lacks is found through the peers' filters and its
// chunks fetched from the peer that has it, through this node's cache tiers.
func (f *filesService) Download(req *pb.DownloadRequest, stream pb.Files_DownloadServer) error {
	r, err := f.n.route(stream.Context())
	if err != nil {
		return err
	}
	return f.n.download(stream.Context(), r, req, stream)
}

// downloadSink is where a download's messages go: a Download stream, or a
// DownloadRange stream that wraps each one with its file's place.
type downloadSink interface {
	Send(*pb.DownloadResponse) error
}

// download is Download's body, routed by r: it sends the file's manifest,
// then its chunks from start_index on, to out.
func (n *Node) download(ctx context.Context, r route, req *pb.DownloadRequest, out downloadSink) error {
	if req.GetStep() > pb.MaxDownloadStep {
		return status.Errorf(codes.InvalidArgument, "download step %d is more than %d", req.GetStep(), pb.MaxDownloadStep)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.peer != nil {
		pd, err := n.openPeerDownload(n.outgoing(ctx, r), r.peer, req)
		if err != nil {
			return err
		}
		return n.relayDownload(pd, req, out)
	}
	m, err := n.lookup(ctx, req.GetName(), req.GetConsistency())
	cluster, via := n.cfg.Cluster, (*peerCluster)(nil)
	if errNotHere(err) {
		var resp *pb.StatResponse
		resp, via, err = n.forwardStat(ctx, r, &pb.StatRequest{Name: req.GetName(), Consistency: req.GetConsistency()})
		if err != nil {
			return err
		}
		m, cluster = resp.GetManifest(), resp.GetCluster()
	}
	if err != nil {
		return toStatus(err)
	}
	chunks := m.GetChunks()
	start, step := int(req.GetStartIndex()), downloadStep(req)
	if start > len(chunks) {
		return status.Errorf(codes.OutOfRange, "start index %d is past the end of %q, which has %d chunks", start, m.GetName(), len(chunks))
	}
	if err := sendManifest(out, m, cluster, step); err != nil {
		return err
	}
	peers, _ := n.placement()
	// The stream carries chunks start, start+step, ...: the k-th of them is
	// chunk at(k).
	at := func(k int) int { return start + k*step }
	size := func(k int) int { return int(chunks[at(k)].GetRawSize()) }
	// The client checks every chunk; unless it asks (having found a bad
	// one) or the node is told to, this node's own copies go out as stored,
	// without decompressing and hashing them here too (scrub checks them at
	// rest). Copies from other nodes and clusters are always checked.
	trusted, _ := n.store.(replica.UnverifiedGetter)
	if req.GetVerify() || n.cfg.VerifyReads || via != nil {
		trusted = nil
	}
	// A large file read here is a scan: it stays out of the cache tiers.
	// A peer cluster's chunks (via) are kept: fetching them again costs a
	// trip to that cluster.
	if via == nil && n.cfg.CacheMaxFile > 0 && int64(m.GetStoredSize()) > n.cfg.CacheMaxFile {
		ctx = replica.Scan(ctx)
	}
	count := (len(chunks) - start + step - 1) / step
	slots := readAhead(ctx, 0, count, downloadWindow, n.streamMem, size, func(k int) (chunker.Encoded, error) {
		ref := chunks[at(k)]
		id := chunker.ID(ref.GetId())
		var (
			c   chunker.Encoded
			err error = replica.ErrNotFound
		)
		if trusted != nil {
			c, err = trusted.GetUnverified(ctx, id)
			if err == nil && c.RawSize != int(ref.GetRawSize()) {
				err = chunker.ErrCorrupt // damaged header: read it again, checked
			}
		}
		if err != nil {
			c, err = n.fetchChunk(ctx, r, peers, via, id)
		}
		if err == nil && c.RawSize != int(ref.GetRawSize()) {
			err = fmt.Errorf("%w: chunk %s holds %d raw bytes, the manifest says %d", chunker.ErrCorrupt, id, c.RawSize, ref.GetRawSize())
		}
		return c, err
	})
	defer drain(slots)
	defer cancel()
	// A chunk sent is queued behind the client's flow-control window until
	// the next Send returns: its memory is given back only then.
	queued := func() {}
	defer func() { queued() }()
	i := start
	for slot := range slots {
		r := <-slot
		if r.err != nil {
			r.release()
			if errors.Is(r.err, replica.ErrNotFound) || errors.Is(r.err, chunker.ErrCorrupt) {
				return status.Errorf(codes.DataLoss, "file %q, chunk %d: %v", m.GetName(), i, r.err)
			}
			return toStatus(fmt.Errorf("file %q, chunk %d: %w", m.GetName(), i, r.err))
		}
		err := out.Send(&pb.DownloadResponse{Index: uint32(i), Chunk: replica.ToWire(r.c)})
		queued()
		queued = r.release
		if err != nil {
			return err
		}
		n.metrics.ChunksServed("download", 1)
		i += step
	}
	return ctx.Err()
}

// downloadStep is req's step between the chunks its stream carries (1: every
// chunk); download refuses one above MaxDownloadStep.
func downloadStep(req *pb.DownloadRequest) int { return max(1, int(req.GetStep())) }

// sendManifest starts a download: the manifest in one message, or in pages
// when its chunk list does not fit in one.
func sendManifest(stream downloadSink, m *pb.FileManifest, cluster string, step int) error {
	for i, page := range pb.ManifestPages(m) {
		msg := &pb.DownloadResponse{Manifest: page}
		if i == 0 {
			msg.Cluster, msg.ChunksTotal = cluster, uint32(len(m.GetChunks()))
			if step > 1 {
				msg.Step = uint32(step)
			}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return nil
}

// Stat returns a file's manifest, from a peer cluster that holds it when the
// local catalog lacks it.
func (f *filesService) Stat(ctx context.Context, req *pb.StatRequest) (*pb.StatResponse, error) {
	r, err := f.n.route(ctx)
	if err != nil {
		return nil, err
	}
	if r.peer != nil {
		return proxyUnary(ctx, f.n, r, func(ctx context.Context, fc pb.FilesClient) (*pb.StatResponse, error) { return fc.Stat(ctx, req) })
	}
	m, err := f.n.lookup(ctx, req.GetName(), req.GetConsistency())
	cluster := f.n.cfg.Cluster
	if errNotHere(err) {
		var resp *pb.StatResponse
		resp, _, err = f.n.forwardStat(ctx, r, req)
		m, cluster = resp.GetManifest(), resp.GetCluster()
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return statPage(m, cluster, int(req.GetChunksFrom()))
}

// statPage answers a Stat with m's chunk list from index from on, at most
// ManifestPage of them.
func statPage(m *pb.FileManifest, cluster string, from int) (*pb.StatResponse, error) {
	total := len(m.GetChunks())
	if from == 0 && total <= pb.ManifestPage {
		return &pb.StatResponse{Manifest: m, Cluster: cluster, ChunksTotal: uint32(total)}, nil
	}
	if from > total {
		return nil, status.Errorf(codes.OutOfRange, "chunk %d is past the end of %q, which has %d chunks", from, m.GetName(), total)
	}
	page := pb.WithoutChunks(m)
	page.Chunks = m.GetChunks()[from:min(total, from+pb.ManifestPage)]
	return &pb.StatResponse{Manifest: page, Cluster: cluster, ChunksTotal: uint32(total)}, nil
}

// List lists this cluster's files and, merged in, those of the peer
// clusters whose date filters say they may hold matches.
func (f *filesService) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	r, err := f.n.route(ctx)
	if err != nil {
		return nil, err
	}
	return f.n.list(ctx, r, req)
}

// list is List's body, routed by r: one page of the listing.
func (n *Node) list(ctx context.Context, r route, req *pb.ListRequest) (*pb.ListResponse, error) {
	if r.peer != nil {
		return proxyUnary(ctx, n, r, func(ctx context.Context, fc pb.FilesClient) (*pb.ListResponse, error) { return fc.List(ctx, req) })
	}
	want, err := catalog.QueryRange(req.GetDateFrom(), req.GetDateTo(), req.TimeFromUnixNano, req.TimeToUnixNano)
	if err != nil {
		return nil, toStatus(err)
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = listDefault
	case limit > listMax:
		limit = listMax
	}
	if err := n.readBarrier(ctx, req.GetConsistency()); err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListResponse{}
	n.fsm.Read(func(s *catalog.State) {
		files, truncated := s.List(catalog.Query{
			Prefix: req.GetPrefix(), StartAfter: req.GetStartAfter(), Limit: limit,
			Time: &want,
		})
		resp.Truncated = truncated
		for _, m := range files {
			fi := FileInfo(m)
			fi.Cluster = n.cfg.Cluster
			resp.Files = append(resp.Files, fi)
		}
	})
	return n.forwardList(ctx, r, req, resp, limit), nil
}

// FileInfo summarises a manifest for listings.
func FileInfo(m *pb.FileManifest) *pb.FileInfo {
	r := catalog.FileRange(m)
	return &pb.FileInfo{
		TimeFromUnixNano: r.From, TimeToUnixNano: r.To,
		Name: m.GetName(), Size: m.GetSize(), Blake3: m.GetBlake3(), Date: m.GetDate(),
		CreatedUnixNano: m.GetCreatedUnixNano(), Chunks: uint32(len(m.GetChunks())), StoredSize: m.GetStoredSize(),
	}
}

// Delete removes a file from the catalog. Its chunks stay in the stores until
// garbage collection.
func (f *filesService) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	if r, err := f.n.route(ctx); err != nil || r.peer != nil {
		if err != nil {
			return nil, err
		}
		return proxyUnary(ctx, f.n, r, func(ctx context.Context, fc pb.FilesClient) (*pb.DeleteResponse, error) { return fc.Delete(ctx, req) })
	}
	if err := catalog.ValidateName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	_, retried, err := f.n.proposeTried(ctx, &pb.Command{Op: &pb.Command_DeleteFile{DeleteFile: &pb.DeleteFile{Name: req.GetName()}}})
	if retried && (errors.Is(err, catalog.ErrNotFound) || status.Code(err) == codes.NotFound) {
		// A try that got no answer (its leader hung or died) removed the
		// file before this one looked: it is gone, as asked.
		err = nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteResponse{}, nil
}
