package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
)

// mbps is bytes per second in MB/s (10^6 bytes).
func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() / 1e6
}

// diskWrite copies src to a new file in dir with 1 MiB writes and one
// fdatasync at the end, returning the write rate; then reads the copy back
// (through the page cache, as ddstore's reads mostly do here).
func diskWrite(src, dir string) (write, read float64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	f, err := os.CreateTemp(dir, "disk-baseline-")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1<<20)
	var written int64
	var elapsed time.Duration // writes only: reading the source is not timed
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			start := time.Now()
			if _, err := f.Write(buf[:n]); err != nil {
				return 0, 0, err
			}
			elapsed += time.Since(start)
			written += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return 0, 0, rerr
		}
	}
	start := time.Now()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, 0, err
	}
	write = mbps(written, elapsed+time.Since(start))
	start = time.Now()
	var got int64
	r, err := os.Open(f.Name())
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	for {
		m, err := r.Read(buf)
		got += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	return write, mbps(got, time.Since(start)), nil
}

// pipelineRate runs the chunker pipeline alone (cut + BLAKE3 + zstd on all
// cores) over the file.
func pipelineRate(ctx context.Context, path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	sum, err := chunker.Pipeline{}.Run(ctx, f, func(chunker.Piece) error { return nil })
	if err != nil {
		return 0, err
	}
	return mbps(sum.Size, time.Since(start)), nil
}

// sink is a gRPC Files service that does no work: Upload discards what it
// receives and Download sends the same 1 MiB chunk until size bytes are out.
type sink struct {
	pb.UnimplementedFilesServer
	size  int64
	chunk *pb.Chunk
}

func (s *sink) Upload(stream pb.Files_UploadServer) error {
	var n uint64
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&pb.UploadResponse{ChunksReceived: n})
		}
		if err != nil {
			return err
		}
		n++
	}
}

func (s *sink) Download(req *pb.DownloadRequest, stream pb.Files_DownloadServer) error {
	for sent, i := int64(0), uint32(0); sent < s.size; i++ {
		if err := stream.Send(&pb.DownloadResponse{Index: i, Chunk: s.chunk}); err != nil {
			return err
		}
		sent += int64(len(s.chunk.Data))
	}
	return nil
}

// grpcRate measures a raw loopback gRPC stream of size bytes in 1 MiB chunk
// messages, both ways, with the same message and window settings as ddstore
// and no work at either end: in plain text (the transport's ceiling), or
// with withTLS over mutual TLS configured the way a ddstore node and its
// clients configure it (node certificate, client certificate, TLS 1.3 as Go
// negotiates it).
func grpcRate(ctx context.Context, size int64, withTLS bool) (up, down float64, err error) {
	srvCreds, cliCreds := insecure.NewCredentials(), insecure.NewCredentials()
	if withTLS {
		if srvCreds, cliCreds, err = loopbackTLS(); err != nil {
			return 0, 0, fmt.Errorf("TLS credentials: %w", err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	chunk := &pb.Chunk{Id: make([]byte, 32), RawSize: 1 << 20, Data: data}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20),
		grpc.InitialWindowSize(8<<20), grpc.InitialConnWindowSize(32<<20),
		grpc.ReadBufferSize(256<<10), grpc.WriteBufferSize(256<<10), grpc.Creds(srvCreds))
	pb.RegisterFilesServer(srv, &sink{size: size, chunk: chunk})
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
		grpc.WithTransportCredentials(cliCreds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
		grpc.WithInitialWindowSize(8<<20), grpc.WithInitialConnWindowSize(32<<20),
		grpc.WithReadBufferSize(256<<10), grpc.WithWriteBufferSize(256<<10))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	files := pb.NewFilesClient(conn)

	start := time.Now()
	stream, err := files.Upload(ctx)
	if err != nil {
		return 0, 0, err
	}
	for sent := int64(0); sent < size; sent += int64(len(data)) {
		if err := stream.Send(&pb.UploadRequest{Chunk: chunk}); err != nil {
			return 0, 0, err
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return 0, 0, err
	}
	up = mbps(size, time.Since(start))

	start = time.Now()
	d, err := files.Download(ctx, &pb.DownloadRequest{})
	if err != nil {
		return 0, 0, err
	}
	var got int64
	for {
		resp, err := d.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, err
		}
		got += int64(len(resp.GetChunk().GetData()))
	}
	return up, mbps(got, time.Since(start)), nil
}

// loopbackTLS returns the credentials of a throwaway cluster's node (the
// server: its ServerTLS, as a ddstore node listens) and of an admin client
// presenting its certificate (as localcluster's clients and the CLI with
// --cert dial).
func loopbackTLS() (srv, cli credentials.TransportCredentials, err error) {
	ca, err := auth.NewCA("bench", time.Hour)
	if err != nil {
		return nil, nil, err
	}
	nodeCert, nodeKey, err := ca.IssueNode(auth.NodeCert{Cluster: "bench", NodeID: "sink", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		return nil, nil, err
	}
	node, err := tls.X509KeyPair(nodeCert, nodeKey)
	if err != nil {
		return nil, nil, err
	}
	cliCert, cliKey, err := ca.IssueClient(auth.ClientCert{Cluster: "bench", Name: "bench", Role: auth.RoleAdmin})
	if err != nil {
		return nil, nil, err
	}
	client, err := tls.X509KeyPair(cliCert, cliKey)
	if err != nil {
		return nil, nil, err
	}
	trust := &auth.Trust{Cluster: "bench", CA: ca.Cert, Cert: node}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cc := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	return credentials.NewTLS(trust.ServerTLS()), credentials.NewTLS(cc), nil
}

// gridfsRate uploads the file to a GridFS bucket directly through
// mongo-driver (128 KiB GridFS chunks, as ddstore's GridFS store uses) and
// downloads it again.
func gridfsRate(ctx context.Context, uri, path string) (up, down float64, err error) {
	cl, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return 0, 0, err
	}
	defer cl.Disconnect(context.Background())
	db := cl.Database(fmt.Sprintf("ddstore_bench_%d", time.Now().UnixNano()))
	defer db.Drop(context.Background())
	bucket := db.GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(128 << 10))
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	id := bson.NewObjectID()
	if err := bucket.UploadFromStreamWithID(ctx, id, "baseline", f); err != nil {
		return 0, 0, fmt.Errorf("gridfs upload: %w", err)
	}
	up = mbps(st.Size(), time.Since(start))
	start = time.Now()
	n, err := bucket.DownloadToStream(ctx, id, io.Discard)
	if err != nil {
		return 0, 0, fmt.Errorf("gridfs download: %w", err)
	}
	if n != st.Size() {
		return 0, 0, errors.New("gridfs download: short")
	}
	return up, mbps(n, time.Since(start)), nil
}
