package ferretpg_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/replica/ferretpg"
)

// TestEnsureIndexes runs against a real PostgreSQL with FerretDB on it,
// started with PostgreSQL's default settings (none of Settings): a GridFS
// store writes some chunks, EnsureIndexes gives each of FerretDB's tables
// its GIN index and the database its settings; a second run changes
// nothing; a new session (which takes the database's settings) plans
// FerretDB's `_jsonb->$1 @> $2` as an index scan; an index left INVALID is
// rebuilt; and the store still reads its chunks through FerretDB.
func TestEnsureIndexes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := testenv.StartMongoPostgres(ctx, testenv.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	if m.Postgres == nil {
		t.Skipf("%s names a FerretDB whose PostgreSQL this test cannot reach", testenv.MongoPostgresURIEnv)
	}
	const db = "ddstore_ferretpg_test"
	g, err := replica.OpenGridFS(ctx, m.URI, db)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	codecs := chunker.NewCodecs()
	var chunks []chunker.Encoded
	for i := range 8 {
		raw := make([]byte, 200<<10+i) // two GridFS chunk documents each
		rand.Read(raw)
		c := codecs.Encode(raw)
		if _, err := g.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}

	t0 := time.Now()
	rep, err := ferretpg.EnsureIndexes(ctx, m.Postgres.URL, ferretpg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first run, %v: %s", time.Since(t0).Round(time.Millisecond), rep.Summary())
	if rep.Database != "ferretdb" || len(rep.Existing) != 0 || len(rep.Rebuilt) != 0 || len(rep.SettingsChanged) != len(ferretpg.Settings()) {
		t.Fatalf("first run: %+v", rep)
	}
	var chunksTable ferretpg.Table
	for _, want := range []string{"chunks_files_", "chunks_chunks_"} {
		found := false
		for _, tb := range rep.Indexed {
			if tb.Schema == db && strings.HasPrefix(tb.Table, want) {
				found = true
				if want == "chunks_chunks_" {
					chunksTable = tb
				}
			}
		}
		if !found {
			t.Fatalf("first run indexed no %s%s* table: %+v", db, want, rep.Indexed)
		}
	}

	conn, err := pgx.Connect(ctx, m.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if got, want := ginIndexes(t, ctx, conn), tableNames(rep.Indexed); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pg_indexes has GIN _id indexes on %v, the report says %v", got, want)
	}

	t0 = time.Now()
	rep2, err := ferretpg.EnsureIndexes(ctx, m.Postgres.URL, ferretpg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second run, %v: %s", time.Since(t0).Round(time.Millisecond), rep2.Summary())
	if len(rep2.Indexed) != 0 || len(rep2.SettingsChanged) != 0 ||
		strings.Join(tableNames(rep2.Existing), " ") != strings.Join(tableNames(rep.Indexed), " ") {
		t.Fatalf("second run was not idempotent: %+v, after %+v", rep2, rep)
	}

	// This connection opened after the first run: it has the settings.
	var seqscan, planCache string
	if err := conn.QueryRow(ctx, "SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')").Scan(&seqscan, &planCache); err != nil {
		t.Fatal(err)
	}
	if seqscan != "off" || planCache != "force_custom_plan" {
		t.Fatalf("a new session has enable_seqscan=%s plan_cache_mode=%s", seqscan, planCache)
	}
	// FerretDB's query shape, prepared as FerretDB prepares it.
	tbl := pgx.Identifier{chunksTable.Schema, chunksTable.Table}.Sanitize()
	if _, err := conn.Exec(ctx, "PREPARE ferret_get(text, jsonb) AS SELECT _jsonb FROM "+tbl+" WHERE _jsonb->$1 @> $2"); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf(`'"%s.1"'`, chunks[3].ID)
	plan := explain(t, ctx, conn, "EXPLAIN EXECUTE ferret_get('_id', "+key+")")
	if !strings.Contains(plan, "Index Scan") || !strings.Contains(plan, chunksTable.Index) {
		t.Fatalf("FerretDB's _id lookup is not an index scan on %s:\n%s", chunksTable.Index, plan)
	}
	t.Logf("plan:\n%s", plan)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tbl+" WHERE _jsonb->'_id' @> "+key+"::jsonb").Scan(&n); err != nil || n != 1 {
		t.Fatalf("lookup of %s: %d rows, %v", key, n, err)
	}

	// An index a failed CREATE INDEX CONCURRENTLY left INVALID.
	if _, err := conn.Exec(ctx, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass",
		pgx.Identifier{chunksTable.Schema, chunksTable.Index}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	rep3, err := ferretpg.EnsureIndexes(ctx, m.Postgres.URL, ferretpg.Options{Analyze: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after invalidating %s: %s", chunksTable.Index, rep3.Summary())
	if len(rep3.Rebuilt) != 1 || rep3.Rebuilt[0] != chunksTable || len(rep3.Indexed) != 1 || len(rep3.Existing) != len(rep.Indexed)-1 {
		t.Fatalf("INVALID index not rebuilt: %+v", rep3)
	}
	var valid bool
	if err := conn.QueryRow(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = $1::regclass",
		pgx.Identifier{chunksTable.Schema, chunksTable.Index}.Sanitize()).Scan(&valid); err != nil || !valid {
		t.Fatalf("rebuilt index: valid %v, %v", valid, err)
	}

	// The store reads every chunk through FerretDB, indexes or not.
	for _, c := range chunks {
		got, err := g.Get(ctx, c.ID)
		if err != nil || string(got.Data) != string(c.Data) {
			t.Fatalf("Get %s after indexing: %v", c.ID, err)
		}
	}
}

// TestEnsureIndexesErrors: a DSN that does not parse is a *DSNError; a
// server that is not there is an error naming it, within the connect
// timeout.
func TestEnsureIndexesErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := ferretpg.EnsureIndexes(ctx, "postgres://user:secret@127.0.0.1:notaport/db", ferretpg.Options{})
	var de *ferretpg.DSNError
	if !errors.As(err, &de) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("bad DSN: %v", err)
	}
	_, err = ferretpg.EnsureIndexes(ctx, "postgres://postgres@127.0.0.1:1/ferretdb?connect_timeout=5", ferretpg.Options{})
	if err == nil || errors.As(err, &de) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable server: %v", err)
	}
	t.Log(err)
}

// ginIndexes lists the tables with a GIN index on `_jsonb->'_id'`, as
// schema.table, sorted.
func ginIndexes(t *testing.T, ctx context.Context, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_indexes
		WHERE indexdef LIKE '%USING gin (((_jsonb -> ''\_id''::text)) jsonb\_path\_ops)'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var s, tb string
		err := r.Scan(&s, &tb)
		return s + "." + tb, err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

func tableNames(ts []ferretpg.Table) []string {
	out := make([]string, len(ts))
	for i, tb := range ts {
		out[i] = tb.String()
	}
	sort.Strings(out)
	return out
}

func explain(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) string {
	t.Helper()
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
