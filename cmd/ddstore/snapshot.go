package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/snapshotfile"
)

// snapshotSaveJSON is what snapshot save and snapshot inspect print with
// --json.
type snapshotSaveJSON struct {
	File    string `json:"file"`
	Cluster string `json:"cluster"` // the cluster it was taken from
	Node    string `json:"node"`    // the node that took it
	Index   uint64 `json:"index"`   // Raft index
	Term    uint64 `json:"term"`
	Files   uint64 `json:"files"`
	Bytes   uint64 `json:"bytes"` // sum of the files' sizes
	Size    int64  `json:"size"`  // bytes of the snapshot file
	Format  uint32 `json:"format"`
	Created string `json:"created"` // RFC 3339 UTC
}

// snapshotRestoreJSON is what snapshot restore prints with --json.
type snapshotRestoreJSON struct {
	File          string `json:"file"`
	FromCluster   string `json:"from_cluster"`
	FromIndex     uint64 `json:"from_index"`
	FromTerm      uint64 `json:"from_term"`
	Index         uint64 `json:"index"` // Raft index of the restore in this cluster
	Term          uint64 `json:"term"`
	Files         uint64 `json:"files"`
	Bytes         uint64 `json:"bytes"`
	ReplacedFiles uint64 `json:"replaced_files"`
	Already       bool   `json:"already"` // the catalog already held exactly these files: nothing was done
}

func snapshotSaveOf(path string, size int64, h *pb.SnapshotHeader) snapshotSaveJSON {
	return snapshotSaveJSON{File: path, Cluster: h.GetCluster(), Node: h.GetNode(), Index: h.GetIndex(), Term: h.GetTerm(),
		Files: h.GetFiles(), Bytes: h.GetBytes(), Size: size, Format: h.GetFormat(),
		Created: time.Unix(0, h.GetCreatedUnixNano()).UTC().Format(time.RFC3339Nano)}
}

// oneFile accepts exactly one argument, the snapshot file.
func oneFile(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		path := strings.TrimPrefix(cmd.CommandPath(), "ddstore ")
		return usageError{fmt.Errorf("%s: want one FILE, got %d arguments (see ddstore %s --help)", path, len(args), path)}
	}
	return nil
}

func newSnapshotCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the catalog to a file, or restore it into a new cluster (admin)",
		Long: `Save the cluster's catalog (which file is made of which chunks) to a file, and
restore it into a new cluster. The chunks are not in the snapshot: copy the
nodes' chunk stores too (docs/OPERATIONS.md, "Backup and restore").`,
	}
	cmd.AddCommand(newSnapshotSaveCmd(g), newSnapshotRestoreCmd(g), newSnapshotInspectCmd(g))
	return cmd
}

func newSnapshotSaveCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Write a consistent snapshot of the catalog to FILE (admin)",
		Long: `Asks the cluster for a consistent snapshot of its catalog (taken after a
linearizable read: it holds every change committed before the command) and
writes it to FILE atomically (a temporary file beside it, synced, renamed),
checking its length and BLAKE3 as it arrives.`,
		Args: oneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.session(cmd.Context(), 10*time.Minute, func(ctx context.Context, c *client.Client) error {
				h, size, err := c.SaveSnapshot(ctx, args[0])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(os.Stdout, snapshotSaveOf(args[0], size, h))
				}
				fmt.Printf("saved the catalog of cluster %s to %s: Raft index %d, term %d; %d files, %d bytes; snapshot file %d bytes\n",
					h.GetCluster(), args[0], h.GetIndex(), h.GetTerm(), h.GetFiles(), h.GetBytes(), size)
				return nil
			})
		},
	}
}

func newSnapshotRestoreCmd(g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the catalog of a new cluster with a saved snapshot (admin)",
		Long: `Checks FILE whole (BLAKE3, format, every manifest in it) and only then sends
it to the cluster, which checks it again and replaces its catalog with it
through Raft on every node at once. The cluster keeps its own members.
A cluster whose catalog holds other files refuses unless --force (its files
are then replaced); one that holds exactly the snapshot's files already is
left as it is. The chunks are not in the snapshot: give the new nodes
copies of the old nodes' chunk stores (docs/OPERATIONS.md).`,
		Args: oneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.session(cmd.Context(), 10*time.Minute, func(ctx context.Context, c *client.Client) error {
				h, resp, err := c.RestoreSnapshot(ctx, args[0], force)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(os.Stdout, snapshotRestoreJSON{File: args[0], FromCluster: h.GetCluster(), FromIndex: h.GetIndex(), FromTerm: h.GetTerm(),
						Index: resp.GetIndex(), Term: resp.GetTerm(), Files: resp.GetFiles(), Bytes: resp.GetBytes(), ReplacedFiles: resp.GetReplacedFiles(),
						Already: resp.GetAlready()})
				}
				if resp.GetAlready() {
					fmt.Printf("the catalog already holds exactly the %d files of %s (cluster %s, Raft index %d): nothing to do\n",
						resp.GetFiles(), args[0], h.GetCluster(), h.GetIndex())
					return nil
				}
				fmt.Printf("restored %s (cluster %s, Raft index %d, term %d): %d files, %d bytes, now at index %d, term %d\n",
					args[0], h.GetCluster(), h.GetIndex(), h.GetTerm(), resp.GetFiles(), resp.GetBytes(), resp.GetIndex(), resp.GetTerm())
				if r := resp.GetReplacedFiles(); r > 0 {
					fmt.Printf("replaced a catalog of %d files (--force)\n", r)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace a catalog that holds files")
	return cmd
}

func newSnapshotInspectCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a snapshot file whole and print its header (offline)",
		Args:  oneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := snapshotfile.Check(args[0])
			if err != nil {
				return fmt.Errorf("snapshot inspect: %s: %w", args[0], err)
			}
			fi, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			h := f.Header
			if g.json {
				return printJSON(os.Stdout, snapshotSaveOf(args[0], fi.Size(), h))
			}
			fmt.Printf("%s: a good snapshot of cluster %s (taken by %s at %s): Raft index %d, term %d; %d files, %d bytes\n",
				args[0], h.GetCluster(), h.GetNode(), time.Unix(0, h.GetCreatedUnixNano()).UTC().Format(time.RFC3339), h.GetIndex(), h.GetTerm(), h.GetFiles(), h.GetBytes())
			return nil
		},
	}
}
