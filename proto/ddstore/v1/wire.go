package ddstorev1

import (
	"context"
	"io"
)

// Names the wire API uses outside its messages (see ddstore.proto), shared
// by nodes and clients.
const (
	// MetadataCluster is the gRPC metadata key naming the cluster a Files
	// call is meant for.
	MetadataCluster = "ddstore-cluster"
	// ReasonPeerClusterUnavailable is the google.rpc.ErrorInfo reason of an
	// Unavailable answer whose cause is a peer cluster, not the node asked:
	// asking another node of the same cluster would not help.
	ReasonPeerClusterUnavailable = "PEER_CLUSTER_UNAVAILABLE"
	// ReasonCollectedSinceCheck is the google.rpc.ErrorInfo reason of a
	// FailedPrecondition refusing a commit because a garbage collection
	// finished while the node checked the file's chunks: checking again
	// tells whether they are still stored.
	ReasonCollectedSinceCheck = "COLLECTED_SINCE_CHECK"
	// ReasonFileChanged is the google.rpc.ErrorInfo reason of a
	// FailedPrecondition refusing an overwrite because another commit
	// changed the file after the upload began: a racing put won.
	ReasonFileChanged = "FILE_CHANGED"
	// ErrorDomain is the google.rpc.ErrorInfo domain of ddstore's reasons.
	ErrorDomain = "ddstore"
)

// ManifestPage is the most chunk references one message carries: a manifest
// with more travels in pages (CommitParts, paged Stat and Download). A page
// is about 5 MB, well under the 9 MiB message limit.
const ManifestPage = 100_000

// MaxDownloadStep is the largest DownloadRequest.step: the most nodes one
// download is split across.
const MaxDownloadStep = 16

// ManifestPages splits m into messages of at most ManifestPage chunks: the
// first is m with its first page of chunks, each next one holds only the
// name and the next page. A manifest that fits is returned as it is.
func ManifestPages(m *FileManifest) []*FileManifest {
	chunks := m.GetChunks()
	if len(chunks) <= ManifestPage {
		return []*FileManifest{m}
	}
	head := WithoutChunks(m)
	head.Chunks = chunks[:ManifestPage]
	pages := []*FileManifest{head}
	for i := ManifestPage; i < len(chunks); i += ManifestPage {
		pages = append(pages, &FileManifest{Name: m.GetName(), Chunks: chunks[i:min(len(chunks), i+ManifestPage)]})
	}
	return pages
}

// WithoutChunks returns a copy of m's header: everything but the chunk list.
func WithoutChunks(m *FileManifest) *FileManifest {
	if m == nil {
		return nil
	}
	return &FileManifest{
		Name: m.GetName(), Size: m.GetSize(), Blake3: m.GetBlake3(), Date: m.GetDate(),
		CreatedUnixNano: m.GetCreatedUnixNano(), Metadata: m.GetMetadata(), StoredSize: m.GetStoredSize(),
		TimeFromUnixNano: m.TimeFromUnixNano, TimeToUnixNano: m.TimeToUnixNano,
	}
}

// CommitPaged sends a commit over fc: in one message, or over CommitParts in
// pages (ManifestPages) when its manifest does not fit in one.
func CommitPaged(ctx context.Context, fc FilesClient, req *CommitRequest) (*CommitResponse, error) {
	pages := ManifestPages(req.GetManifest())
	if len(pages) == 1 {
		return fc.Commit(ctx, req)
	}
	s, err := fc.CommitParts(ctx)
	if err != nil {
		return nil, err
	}
	for i, page := range pages {
		part := &CommitRequest{Manifest: page}
		if i == 0 {
			part.Overwrite, part.Replaces, part.RequestId = req.GetOverwrite(), req.GetReplaces(), req.GetRequestId()
		}
		if err := s.Send(part); err != nil {
			if err == io.EOF {
				_, err = s.CloseAndRecv() // the node's answer
			}
			return nil, err
		}
	}
	return s.CloseAndRecv()
}
