package web

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"github.com/ddstore/ddstore/internal/units"
	"html/template"
	"io"
	"mime"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// page is what every template gets.
type page struct {
	Base    string
	Title   string
	Nav     string // the navigation entry to highlight
	User    *user  // nil: no login (insecure cluster) or not logged in
	Open    bool   // insecure cluster: no login
	Refresh int64  // milliseconds between refreshes of the live part; 0: none
	Error   string
	Data    any
}

// parsePages parses the templates under templates/, each defining
// "content" (and "live" for the pages that refresh) around layout.html.
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"bytes":    humanBytes,
		"hex":      func(b []byte) string { return hex.EncodeToString(b) },
		"short":    func(b []byte) string { s := hex.EncodeToString(b); return s[:min(len(s), 16)] },
		"unixnano": func(ns int64) string { return time.Unix(0, ns).UTC().Format("2006-01-02 15:04:05 MST") },
		"ms":       fmtMillis,
		"ratio":    ratio,
		"add":      func(a, b int) int { return a + b },
		"time":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") },
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "cluster", "peers", "cache", "heal", "files", "file", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// render writes page p with template name: the whole page, or only its live
// part for an auto-refresh request.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	p.Base = c.opts.Base
	p.Open = c.open != nil
	if _, se, err := c.current(r); err == nil && se != nil {
		u := se.user
		p.User = &u
	}
	t := c.pages[name]
	which := "layout.html"
	if isLive(r) && t.Lookup("live") != nil {
		which = "live"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, which, p); err != nil {
		c.log.Error("console template", "page", name, "err", err)
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// fail shows a cluster call's error: a token the nodes no longer take ends
// the session (back to the login page); others get an error page with the
// matching HTTP status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, rq request, what string, err error) {
	code := httpCode(err)
	if code == http.StatusUnauthorized && rq.session != nil {
		c.sessions.remove(rq.session.id)
		if !isLive(r) {
			http.Redirect(w, r, c.opts.Base+"/login", http.StatusSeeOther)
			return
		}
	}
	msg := what + ": " + status.Convert(err).Message()
	if isLive(r) {
		// The live part of a page shows the error in place of the data.
		c.render(w, r, http.StatusOK, "error", page{Title: "Error", Error: msg})
		return
	}
	c.render(w, r, code, "error", page{Title: "Error", Error: msg})
}

// httpCode maps a cluster call's error to an HTTP status.
func httpCode(err error) int {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

// clusterView is the cluster page's data.
type clusterView struct {
	*pb.StatusResponse
	Up, Down int
}

// down tells a node that did not answer.
func down(n *pb.NodeStatus) bool {
	switch n.GetState() {
	case "Leader", "Follower", "Candidate":
		return false
	}
	return true
}

func (c *Console) status(w http.ResponseWriter, r *http.Request, rq request) (*pb.StatusResponse, bool) {
	ctx, cancel := c.callCtx(r.Context())
	defer cancel()
	st, err := rq.client.Status(ctx)
	if err != nil {
		c.fail(w, r, rq, "status", err)
		return nil, false
	}
	return st, true
}

func (c *Console) statusPage(name, title string) func(http.ResponseWriter, *http.Request, request) {
	return func(w http.ResponseWriter, r *http.Request, rq request) {
		st, ok := c.status(w, r, rq)
		if !ok {
			return
		}
		slices.SortFunc(st.Nodes, func(a, b *pb.NodeStatus) int { return strings.Compare(a.GetId(), b.GetId()) })
		v := clusterView{StatusResponse: st}
		for _, n := range st.GetNodes() {
			if down(n) {
				v.Down++
			} else {
				v.Up++
			}
		}
		c.render(w, r, http.StatusOK, name, page{Title: title, Nav: name, Refresh: c.opts.RefreshInterval.Milliseconds(), Data: v})
	}
}

func (c *Console) clusterPage(w http.ResponseWriter, r *http.Request, rq request) {
	c.statusPage("cluster", "Cluster")(w, r, rq)
}

func (c *Console) peersPage(w http.ResponseWriter, r *http.Request, rq request) {
	c.statusPage("peers", "Peer clusters")(w, r, rq)
}

func (c *Console) cachePage(w http.ResponseWriter, r *http.Request, rq request) {
	c.statusPage("cache", "Cache tiers")(w, r, rq)
}

func (c *Console) healPage(w http.ResponseWriter, r *http.Request, rq request) {
	c.statusPage("heal", "Heal")(w, r, rq)
}

// filesView is the file browser's data.
type filesView struct {
	Prefix, From, To string
	After            string // the page starts after this name
	Listed           bool
	Files            []*pb.FileInfo // one page
	Truncated        bool           // more names follow the page
	Next             string         // After of the next page
	Bytes            uint64         // the page's files' sizes
	Unanswered       []*pb.ClusterNote
	Crumbs           []folder // the prefix's folders, outermost first
	Folders          []folder // folders one level below the prefix, in this page
}

// folder is a prefix ending in '/' to list, with the part of it to show.
type folder struct {
	Label, Prefix string
	Files         int // files under it (Folders only)
}

// crumbs splits a prefix into its folders: "a/b/c" is a/, a/b/ (and c, the
// start of names, is not a folder).
func crumbs(prefix string) []folder {
	var out []folder
	for i := 0; i < len(prefix); i++ {
		if prefix[i] == '/' {
			start := 0
			if len(out) > 0 {
				start = len(out[len(out)-1].Prefix)
			}
			out = append(out, folder{Label: prefix[start : i+1], Prefix: prefix[:i+1]})
		}
	}
	return out
}

// subfolders returns the folders one level below prefix that the listed
// names fall in, in name order (the names come sorted).
func subfolders(prefix string, files []*pb.FileInfo) []folder {
	var out []folder
	for _, f := range files {
		rest, ok := strings.CutPrefix(f.GetName(), prefix)
		if !ok {
			continue
		}
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			continue
		}
		p := prefix + rest[:i+1]
		if n := len(out); n > 0 && out[n-1].Prefix == p {
			out[n-1].Files++
			continue
		}
		out = append(out, folder{Label: rest[:i+1], Prefix: p, Files: 1})
	}
	return out
}

func (c *Console) filesPage(w http.ResponseWriter, r *http.Request, rq request) {
	q := r.URL.Query()
	v := filesView{Prefix: q.Get("prefix"), From: q.Get("from"), To: q.Get("to"), After: q.Get("after")}
	v.Crumbs = crumbs(v.Prefix)
	for _, d := range []string{v.From, v.To} {
		if d == "" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			c.render(w, r, http.StatusBadRequest, "files", page{Title: "Files", Nav: "files", Error: fmt.Sprintf("date %q: want YYYY-MM-DD", d), Data: v})
			return
		}
	}
	ctx, cancel := c.callCtx(r.Context())
	defer cancel()
	l, err := rq.client.List(ctx, client.ListOptions{Prefix: v.Prefix, DateFrom: v.From, DateTo: v.To, StartAfter: v.After, Limit: c.opts.ListPage})
	if err != nil {
		c.fail(w, r, rq, "list", err)
		return
	}
	v.Listed = true
	v.Files, v.Truncated = l.Files, l.Truncated
	if v.Truncated && len(v.Files) > 0 {
		v.Next = v.Files[len(v.Files)-1].GetName()
	}
	for _, f := range l.Files {
		v.Bytes += f.GetSize()
	}
	v.Unanswered = l.Unanswered
	v.Folders = subfolders(v.Prefix, l.Files)
	c.render(w, r, http.StatusOK, "files", page{Title: "Files", Nav: "files", Data: v})
}

// chunkRow is one chunk of the file page: where it is and which nodes its
// copies belong on.
type chunkRow struct {
	Index  int
	Ref    *pb.ChunkRef
	Copies []copyAt
}

// copyAt is one node expected to hold a copy.
type copyAt struct {
	Node string
	Down bool
}

// fileView is the file page's data.
type fileView struct {
	Manifest  *pb.FileManifest
	Cluster   string // the cluster that holds the file
	Local     bool   // that is the cluster whose status we have
	Dir       string // the prefix the file sits under, for the way back
	Chunks    []chunkRow
	From      int // first chunk shown
	Next      int // first chunk of the next page; 0: none
	Prev      int // first chunk of the previous page; -1: none
	Replicas  uint32
	Placement string // why placement is not shown, when it is not
}

// chunkPage is how many chunks the file page shows at once.
const chunkPage = 500

func (c *Console) filePage(w http.ResponseWriter, r *http.Request, rq request) {
	name := r.URL.Query().Get("name")
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	from = max(from, 0)
	ctx, cancel := c.callCtx(r.Context())
	defer cancel()
	resp, err := rq.client.Lookup(ctx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		c.fail(w, r, rq, "stat "+strconv.Quote(name), err)
		return
	}
	m := resp.GetManifest()
	v := fileView{Manifest: m, Cluster: resp.GetCluster(), From: from, Prev: -1}
	if d := path.Dir(name); d != "." {
		v.Dir = d + "/"
	}
	chunks := m.GetChunks()
	if from >= len(chunks) && len(chunks) > 0 {
		from = 0
		v.From = 0
	}
	end := min(len(chunks), from+chunkPage)
	if end < len(chunks) {
		v.Next = end
	}
	if from > 0 {
		v.Prev = max(0, from-chunkPage)
	}
	st, err := rq.client.Status(ctx)
	var placement func(chunker.ID) []copyAt
	switch {
	case err != nil:
		v.Placement = "placement unknown: status: " + status.Convert(err).Message()
	case v.Cluster != "" && v.Cluster != st.GetCluster():
		v.Placement = fmt.Sprintf("the file is held by peer cluster %s: where its copies are is that cluster's business", v.Cluster)
	default:
		v.Local = true
		v.Replicas = st.GetReplicas()
		placement = placer(st)
	}
	for i := from; i < end; i++ {
		row := chunkRow{Index: i, Ref: chunks[i]}
		if placement != nil {
			if id, err := chunker.IDFromBytes(chunks[i].GetId()); err == nil {
				row.Copies = placement(id)
			}
		}
		v.Chunks = append(v.Chunks, row)
	}
	c.render(w, r, http.StatusOK, "file", page{Title: name, Nav: "files", Data: v})
}

// placer returns where the copies of a chunk belong: the first R voters in
// the chunk's rendezvous order (replica.Rank), as uploads and repair place
// them, each marked down if it did not answer the status call.
func placer(st *pb.StatusResponse) func(chunker.ID) []copyAt {
	var voters []replica.Peer
	isDown := map[string]bool{}
	for _, n := range st.GetNodes() {
		if n.GetVoter() {
			voters = append(voters, replica.Peer{ID: n.GetId()})
		}
		isDown[n.GetId()] = down(n)
	}
	r := max(1, min(int(st.GetReplicas()), len(voters)))
	return func(id chunker.ID) []copyAt {
		ranked := replica.Rank(id, voters)
		out := make([]copyAt, 0, r)
		for _, p := range ranked[:min(r, len(ranked))] {
			out = append(out, copyAt{Node: p.ID, Down: isDown[p.ID]})
		}
		slices.SortFunc(out, func(a, b copyAt) int {
			switch {
			case a.Node < b.Node:
				return -1
			case a.Node > b.Node:
				return 1
			}
			return 0
		})
		return out
	}
}

// download streams a file through client.Get, verified chunk by chunk. A
// download that breaks after its first bytes is cut off (the browser sees
// an incomplete transfer, not a short file).
func (c *Console) download(w http.ResponseWriter, r *http.Request, rq request) {
	name := r.URL.Query().Get("name")
	ctx, cancel := c.callCtx(r.Context())
	resp, err := rq.client.Lookup(ctx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE)
	cancel()
	if err != nil {
		c.fail(w, r, rq, "stat "+strconv.Quote(name), err)
		return
	}
	size := resp.GetManifest().GetSize()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", contentDisposition(name))
	h.Set("Content-Length", strconv.FormatUint(size, 10))
	h.Set("Cache-Control", "no-store")
	// A large file takes long: no write deadline of the HTTP server's cuts
	// it short (the client's progress timeout bounds a stalled transfer).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	cw := &countingWriter{w: w}
	start := time.Now()
	_, err = rq.client.Get(r.Context(), name, cw, client.GetOptions{})
	if err != nil {
		c.log.Warn("console download failed", "name", name, "after_bytes", cw.n, "err", err)
		if cw.n == 0 {
			h.Del("Content-Length")
			h.Del("Content-Disposition")
			c.fail(w, r, rq, "get "+strconv.Quote(name), err)
			return
		}
		panic(http.ErrAbortHandler)
	}
	c.log.Info("console download", "name", name, "bytes", cw.n, "duration", time.Since(start))
}

// contentDisposition names the download after the file's last path
// element (RFC 6266; non-ASCII names travel in filename*).
func contentDisposition(name string) string {
	base := path.Base(name)
	if base == "." || base == "/" || base == "" {
		base = "download"
	}
	if v := mime.FormatMediaType("attachment", map[string]string{"filename": base}); v != "" {
		return v
	}
	return "attachment"
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

func humanBytes(n uint64) string { return units.Bytes(int64(n)) }

func fmtMillis(ms int64) string {
	if ms < 0 {
		return "never"
	}
	return (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
}

func ratio(a, b uint64) string {
	if a+b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(a+b))
}
