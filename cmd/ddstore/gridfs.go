package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ddstore/ddstore/replica/ferretpg"
)

// gridfsIndexJSON is what gridfs index prints with --json.
type gridfsIndexJSON struct {
	Database        string           `json:"database"`
	Indexed         []ferretpg.Table `json:"indexed"`
	Rebuilt         []ferretpg.Table `json:"rebuilt"`
	Existing        []ferretpg.Table `json:"existing"`
	SettingsChanged []string         `json:"settings_changed"`
	RestartFerretDB bool             `json:"restart_ferretdb"`
}

func gridfsIndexOf(rep ferretpg.Report) gridfsIndexJSON {
	tables := func(ts []ferretpg.Table) []ferretpg.Table {
		if ts == nil {
			return []ferretpg.Table{}
		}
		return ts
	}
	out := gridfsIndexJSON{Database: rep.Database, Indexed: tables(rep.Indexed), Rebuilt: tables(rep.Rebuilt),
		Existing: tables(rep.Existing), SettingsChanged: []string{}, RestartFerretDB: len(rep.SettingsChanged) > 0}
	for _, s := range rep.SettingsChanged {
		out.SettingsChanged = append(out.SettingsChanged, s.String())
	}
	return out
}

func newGridFSCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gridfs",
		Short: "Look after the database under the gridfs store",
	}
	cmd.AddCommand(newGridFSIndexCmd(g))
	return cmd
}

func newGridFSIndexCmd(g *globalFlags) *cobra.Command {
	var dsn string
	cmd := &cobra.Command{
		Use:   "index --postgres DSN",
		Short: "Give FerretDB's PostgreSQL database the indexes the gridfs store reads by",
		Long: `FerretDB (v1.24) on PostgreSQL answers every _id lookup of the gridfs store
with a scan of the whole collection: 2.8 s a chunk with 100 MiB stored, up to
2 minutes with 5 GiB. This command connects to FerretDB's PostgreSQL database
(--postgres: the URL FerretDB's --postgresql-url is given, or env
DDSTORE_FERRETDB_POSTGRES) and creates, on every FerretDB collection table that
lacks one, a GIN index on (_jsonb->'_id') jsonb_path_ops, with CREATE INDEX
CONCURRENTLY (a live store keeps writing; an index a failed build left INVALID
is dropped and built again), and sets on the database plan_cache_mode =
force_custom_plan, enable_seqscan = off and jit = off, which the indexes need.
A read then takes some 50 ms whatever the size of the store.

Run it once the nodes have started (their collections exist), and again after
adding a node; running it again changes nothing. When it sets the settings it
says so: restart FerretDB then, since its open connections keep the old ones.
A node started with --ferretdb-postgres does this itself at start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				return usageError{errors.New("gridfs index: give FerretDB's PostgreSQL database with --postgres DSN (or DDSTORE_FERRETDB_POSTGRES), e.g. --postgres postgres://ferretdb@db:5432/ferretdb")}
			}
			ctx := cmd.Context()
			if g.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, g.timeout)
				defer cancel()
			}
			rep, err := ferretpg.EnsureIndexes(ctx, dsn, ferretpg.Options{})
			var de *ferretpg.DSNError
			switch {
			case errors.As(err, &de):
				return usageError{fmt.Errorf("gridfs index: --postgres: %w", err)}
			case err != nil && cmd.Context().Err() != nil:
				return interruptedError{fmt.Errorf("gridfs index: interrupted (an index being built is left INVALID; run the command again to rebuild it): %w", err)}
			case err != nil:
				return fmt.Errorf("gridfs index: %w", err)
			}
			if g.json {
				return printJSON(os.Stdout, gridfsIndexOf(rep))
			}
			for _, t := range rep.Indexed {
				what := "indexed"
				for _, r := range rep.Rebuilt {
					if r == t {
						what = "rebuilt the INVALID index of"
					}
				}
				fmt.Printf("%s %s (%s)\n", what, t, t.Index)
			}
			fmt.Println(rep.Summary())
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "postgres", os.Getenv("DDSTORE_FERRETDB_POSTGRES"), "FerretDB's PostgreSQL database, as a URL (postgres://user:password@host:5432/ferretdb) or key=value DSN (env DDSTORE_FERRETDB_POSTGRES)")
	return cmd
}
