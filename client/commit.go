package client

import (
	"context"
	"crypto/rand"
	"fmt"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc"
)

// CommitOptions tune Commit.
type CommitOptions struct {
	Overwrite bool // replace a file of the same name
}

// Commit lists a file whose chunks the cluster already holds, under the
// manifest m (its name, chunk list, sizes, hash and metadata): no chunk
// bytes travel. It is how a file is copied under another name, or how a
// file is assembled from the chunks of others. The cluster checks that
// every chunk has its copies. It returns the manifest as committed.
func (c *Client) Commit(ctx context.Context, m *pb.FileManifest, opts CommitOptions) (*pb.FileManifest, error) {
	req := &pb.CommitRequest{Manifest: m, Overwrite: opts.Overwrite, RequestId: newRequestID()}
	var out *pb.FileManifest
	err := c.callFor(ctx, commitTimeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := pb.CommitPaged(ctx, pb.NewFilesClient(conn), req)
		out = resp.GetManifest()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("commit %q: %w", m.GetName(), err)
	}
	if out != nil && len(out.Chunks) == 0 {
		out.Chunks = m.Chunks // a large manifest comes back without its list
	}
	return out, nil
}

// newRequestID names one commit across its retries (CommitRequest.request_id):
// the catalog applies it at most once, so a retry of a commit whose answer
// was lost cannot apply it again after the file was deleted or replaced.
func newRequestID() []byte {
	id := make([]byte, 16)
	rand.Read(id)
	return id
}
