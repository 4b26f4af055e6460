// Package ferretpg gives FerretDB's PostgreSQL database the indexes and
// settings the GridFS chunk store needs to read a chunk without scanning its
// collection.
//
// FerretDB v1.24.2 on PostgreSQL filters `{_id: X}` as `_jsonb->$1 @> $2`
// (jsonb containment), which the btree index it creates on `_jsonb->'_id'`
// cannot serve, so every one-chunk read scans the whole collection (2.8 s
// with 100 MiB stored, up to 2 minutes with 5 GiB; docs/BENCHMARKS.md). A GIN
// index on that very expression, `USING gin ((_jsonb->'_id') jsonb_path_ops)`,
// serves `@>`; with the database settings of Settings (FerretDB's prepared
// statements planned with their parameters, no sequential scan where an
// index serves, no JIT) a read takes 45-66 ms whatever the size of the store.
// EnsureIndexes creates those indexes on every FerretDB collection table and
// sets those settings. FerretDB does not know the indexes and needs no
// change; dropping a collection drops its index.
//
// This package is the one place that SQL lives: `ddstore gridfs index`, the
// node's --ferretdb-postgres and the tests (internal/testenv) all use it.
package ferretpg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Setting is one database setting EnsureIndexes applies with ALTER DATABASE.
type Setting struct {
	Name, Value string
}

func (s Setting) String() string { return s.Name + "=" + s.Value }

// Settings are the database settings the GIN indexes need to be used
// reliably: FerretDB prepares `_jsonb->$1 @> $2`, which matches the index's
// expression only when planned with its parameters (force_custom_plan); the
// planner does not count the cost of detoasting every document a scan
// filters on, so it prefers scanning a collection of a few hundred large
// chunk documents (enable_seqscan=off); and a query no index serves is
// then costed so high that JIT would compile it (jit=off).
func Settings() []Setting {
	return []Setting{
		{"plan_cache_mode", "force_custom_plan"},
		{"enable_seqscan", "off"},
		{"jit", "off"},
	}
}

// Options tune EnsureIndexes.
type Options struct {
	// SkipSettings leaves the database settings alone: only the indexes
	// are made.
	SkipSettings bool
	// Analyze runs ANALYZE on each table that got an index. It reads a
	// sample of the table's documents, which takes a while on a large
	// store; the indexes are used without it (enable_seqscan=off).
	Analyze bool
}

// Table is a FerretDB collection table: its PostgreSQL schema (the FerretDB
// database) and name, and the name of its GIN index on `_jsonb->'_id'`.
type Table struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
	Index  string `json:"index"`
}

func (t Table) String() string { return t.Schema + "." + t.Table }

// Report says what EnsureIndexes did.
type Report struct {
	// Database is the PostgreSQL database (current_database()).
	Database string
	// Indexed are the tables that got an index now (Rebuilt among them).
	Indexed []Table
	// Rebuilt are the tables whose index was left INVALID by a failed
	// CREATE INDEX CONCURRENTLY: it was dropped and made again.
	Rebuilt []Table
	// Existing are the tables that already had a valid index.
	Existing []Table
	// SettingsChanged lists the settings that were not yet set on the
	// database and now are. Connections opened before keep their old
	// settings: FerretDB must be restarted to use them.
	SettingsChanged []Setting
}

// DSNError is a DSN that does not parse: a mistake in the command line or
// the configuration rather than a failure of the server.
type DSNError struct{ Err error }

func (e *DSNError) Error() string { return "ferretpg: bad PostgreSQL DSN: " + e.Err.Error() }
func (e *DSNError) Unwrap() error { return e.Err }

const (
	// connectTimeout bounds the connection when the DSN sets none.
	connectTimeout = 10 * time.Second
	// cleanupTimeout bounds dropping an index a failed build left INVALID.
	cleanupTimeout = 30 * time.Second
	// lockKey is the advisory lock (pg_advisory_lock) that serializes
	// EnsureIndexes runs on one PostgreSQL server, so that the nodes of a
	// cluster starting together do not build the same indexes side by side
	// or take each other's builds in progress for failed ones.
	lockKey int64 = 0x6464_7374_6f72_6531 // "ddstore1"
	// indexSuffix ends the name of every index EnsureIndexes creates.
	indexSuffix = "_id_gin"
	// maxIdent is PostgreSQL's longest identifier, in bytes.
	maxIdent = 63
)

// The SQL, all of it.
const (
	lockSQL   = `SELECT pg_advisory_lock($1)`
	unlockSQL = `SELECT pg_advisory_unlock($1)`
	// collectionsSQL lists FerretDB's collection tables: ordinary tables
	// with a _jsonb column, except FerretDB's own _ferretdb_* tables and the
	// system schemas.
	collectionsSQL = `SELECT n.nspname, c.relname, c.oid
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = '_jsonb' AND NOT a.attisdropped
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
  AND c.relname NOT LIKE '\_ferretdb%'
ORDER BY 1, 2`
	// idIndexesSQL lists the GIN indexes of table $1 on
	// `(_jsonb->'_id') jsonb_path_ops`, whatever their names: the valid
	// ones first, and whether a build of each is in progress.
	idIndexesSQL = `SELECT i.relname, x.indisvalid,
  EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = x.indexrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_am am ON am.oid = i.relam
JOIN pg_opclass oc ON oc.oid = x.indclass[0]
WHERE x.indrelid = $1 AND am.amname = 'gin' AND x.indnatts = 1 AND oc.opcname = 'jsonb_path_ops'
  AND pg_get_indexdef(x.indexrelid, 1, true) = '(_jsonb -> ''_id''::text)'
ORDER BY x.indisvalid DESC, i.relname`
	// createIndexSQL is formatted with the index name and the table's
	// schema and name, each quoted as an identifier.
	createIndexSQL = `CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s.%s USING gin ((_jsonb->'_id') jsonb_path_ops)`
	dropIndexSQL   = `DROP INDEX CONCURRENTLY IF EXISTS %s.%s`
	analyzeSQL     = `ANALYZE %s.%s`
	// settingsSQL is the database's own settings (ALTER DATABASE ... SET,
	// for every role), as name=value.
	settingsSQL = `SELECT current_database(), coalesce((SELECT s.setconfig FROM pg_db_role_setting s
  JOIN pg_database d ON d.oid = s.setdatabase
  WHERE d.datname = current_database() AND s.setrole = 0), '{}')`
	// alterSQL is formatted with the database, quoted, and a Setting.
	alterSQL = `ALTER DATABASE %s SET %s = %s`
)

// EnsureIndexes connects to FerretDB's PostgreSQL database at dsn (a
// PostgreSQL URL or key=value DSN, as FerretDB's --postgresql-url) and makes
// sure that every FerretDB collection table has a valid GIN index on
// `(_jsonb->'_id') jsonb_path_ops` and, unless opts.SkipSettings, that the
// database has Settings. Indexes are built with CREATE INDEX CONCURRENTLY,
// which does not block a live store's writes; an index a failed build left
// INVALID is dropped and built again. It is idempotent: a second run finds
// everything in place and changes nothing. Run it once the nodes have
// opened their stores (their collections exist), and again after adding a
// node. The user needs to own the tables (and the database, for the
// settings), as FerretDB's user does.
func EnsureIndexes(ctx context.Context, dsn string, opts Options) (Report, error) {
	var rep Report
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return rep, &DSNError{Err: err}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "ddstore-ferretpg"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return rep, fmt.Errorf("ferretpg: connect to %s: %w", where(cfg), connectCause(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if _, err := conn.Exec(ctx, lockSQL, lockKey); err != nil {
		return rep, fmt.Errorf("ferretpg: wait for other index runs: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), unlockSQL, lockKey)

	tables, err := collections(ctx, conn)
	if err != nil {
		return rep, err
	}
	for _, t := range tables {
		if err := ensureIndex(ctx, conn, t, opts, &rep); err != nil {
			return rep, err
		}
	}
	if err := ensureSettings(ctx, conn, opts, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// where names the server and database of cfg, without the password.
func where(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("PostgreSQL at %s:%d, database %q", cfg.Host, cfg.Port, cfg.Database)
}

// connectCause is the cause of a failed connection, said once: pgx joins
// the error of each address and TLS mode it tried, which is the same
// refusal or the same timeout twice.
func connectCause(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return opErr
	}
	return err
}

type collection struct {
	Table
	oid uint32
}

func collections(ctx context.Context, conn *pgx.Conn) ([]collection, error) {
	rows, err := conn.Query(ctx, collectionsSQL)
	if err != nil {
		return nil, fmt.Errorf("ferretpg: list FerretDB's tables: %w", err)
	}
	var out []collection
	for rows.Next() {
		var c collection
		if err := rows.Scan(&c.Schema, &c.Table.Table, &c.oid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ferretpg: list FerretDB's tables: %w", err)
		}
		c.Index = indexName(c.Table.Table)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ferretpg: list FerretDB's tables: %w", err)
	}
	return out, nil
}

// indexName is the name of the GIN index of table: "<table>_id_gin" (as
// the SQL docs/OPERATIONS.md used to give made it), or, where that is
// longer than PostgreSQL keeps, a prefix of the table's name and a hash of
// all of it, so that two long names sharing a prefix get distinct indexes.
func indexName(table string) string {
	if len(table)+len(indexSuffix) <= maxIdent {
		return table + indexSuffix
	}
	h := fnv.New32a()
	h.Write([]byte(table))
	tail := fmt.Sprintf("_%08x%s", h.Sum32(), indexSuffix)
	prefix := table[:maxIdent-len(tail)]
	for !utf8.ValidString(prefix) {
		prefix = prefix[:len(prefix)-1]
	}
	return prefix + tail
}

type idIndex struct {
	name     string
	valid    bool
	building bool
}

func idIndexes(ctx context.Context, conn *pgx.Conn, c collection) ([]idIndex, error) {
	rows, err := conn.Query(ctx, idIndexesSQL, c.oid)
	if err != nil {
		return nil, fmt.Errorf("ferretpg: indexes of %s: %w", c.Table, err)
	}
	var out []idIndex
	for rows.Next() {
		var ix idIndex
		if err := rows.Scan(&ix.name, &ix.valid, &ix.building); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ferretpg: indexes of %s: %w", c.Table, err)
		}
		out = append(out, ix)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ferretpg: indexes of %s: %w", c.Table, err)
	}
	return out, nil
}

func ensureIndex(ctx context.Context, conn *pgx.Conn, c collection, opts Options, rep *Report) error {
	ixs, err := idIndexes(ctx, conn, c)
	if err != nil {
		return err
	}
	if len(ixs) > 0 && ixs[0].valid {
		c.Index = ixs[0].name
		rep.Existing = append(rep.Existing, c.Table)
		return nil
	}
	rebuilt := false
	for _, ix := range ixs { // all INVALID
		if ix.building {
			return fmt.Errorf("ferretpg: index %s of %s is being built by another session: run again when it is done", ix.name, c.Table)
		}
		if err := dropIndex(ctx, conn, c.Schema, ix.name); err != nil {
			return fmt.Errorf("ferretpg: drop INVALID index %s of %s: %w", ix.name, c.Table, err)
		}
		rebuilt = true
	}
	create := fmt.Sprintf(createIndexSQL, ident(c.Index), ident(c.Schema), ident(c.Table.Table))
	if _, err := conn.Exec(ctx, create); err != nil {
		// A failed CREATE INDEX CONCURRENTLY leaves an INVALID index:
		// drop it now if possible (else the next run does).
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if ixs, lerr := idIndexes(cctx, conn, c); lerr == nil {
			for _, ix := range ixs {
				if !ix.valid && !ix.building {
					dropIndex(cctx, conn, c.Schema, ix.name)
				}
			}
		}
		return fmt.Errorf("ferretpg: create index %s on %s: %w", c.Index, c.Table, err)
	}
	// IF NOT EXISTS skips quietly when the name is taken, even by an index
	// of another table or of another kind: check that this table has one.
	ixs, err = idIndexes(ctx, conn, c)
	if err != nil {
		return err
	}
	if len(ixs) == 0 || !ixs[0].valid {
		return fmt.Errorf("ferretpg: create index %s on %s: no valid index afterwards (is the name taken by another relation?)", c.Index, c.Table)
	}
	c.Index = ixs[0].name
	if opts.Analyze {
		if _, err := conn.Exec(ctx, fmt.Sprintf(analyzeSQL, ident(c.Schema), ident(c.Table.Table))); err != nil {
			return fmt.Errorf("ferretpg: analyze %s: %w", c.Table, err)
		}
	}
	rep.Indexed = append(rep.Indexed, c.Table)
	if rebuilt {
		rep.Rebuilt = append(rep.Rebuilt, c.Table)
	}
	return nil
}

func dropIndex(ctx context.Context, conn *pgx.Conn, schema, name string) error {
	_, err := conn.Exec(ctx, fmt.Sprintf(dropIndexSQL, ident(schema), ident(name)))
	return err
}

func ensureSettings(ctx context.Context, conn *pgx.Conn, opts Options, rep *Report) error {
	var have []string
	if err := conn.QueryRow(ctx, settingsSQL).Scan(&rep.Database, &have); err != nil {
		return fmt.Errorf("ferretpg: read the database's settings: %w", err)
	}
	if opts.SkipSettings {
		return nil
	}
	for _, s := range Settings() {
		if slices.Contains(have, s.String()) {
			continue
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf(alterSQL, ident(rep.Database), s.Name, s.Value)); err != nil {
			return fmt.Errorf("ferretpg: set %s on database %s: %w", s, rep.Database, err)
		}
		rep.SettingsChanged = append(rep.SettingsChanged, s)
	}
	return nil
}

// ident quotes an identifier for SQL.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// Summary is one line saying what rep means, for people: the tables
// indexed now and before, and whether FerretDB must be restarted.
func (rep Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "database %s: %d FerretDB tables indexed now, %d already indexed", rep.Database, len(rep.Indexed), len(rep.Existing))
	if len(rep.Rebuilt) > 0 {
		fmt.Fprintf(&b, " (%d INVALID indexes rebuilt)", len(rep.Rebuilt))
	}
	if len(rep.SettingsChanged) > 0 {
		names := make([]string, len(rep.SettingsChanged))
		for i, s := range rep.SettingsChanged {
			names[i] = s.String()
		}
		fmt.Fprintf(&b, "; set %s: restart FerretDB so that its connections use them", strings.Join(names, ", "))
	} else {
		b.WriteString("; settings already in place")
	}
	return b.String()
}
