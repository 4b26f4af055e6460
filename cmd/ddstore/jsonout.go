package main

// The one JSON shape of every command's --json output, documented in
// docs/JSON.md and docs/json-schema.json. Every command prints exactly one
// JSON object on standard output (two-space indented, keys in the order
// below): hashes in lower-case hex, byte counts and counters as JSON
// numbers, instants as RFC 3339 UTC strings, no field left out for being
// zero. These are plain structs, never protojson.

import (
	"encoding/hex"
	"time"

	"github.com/ddstore/ddstore/catalog"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/timerange"
)

// fileJSON is one file: an entry of ls, and the head of stat.
type fileJSON struct {
	Name       string `json:"name"`
	Cluster    string `json:"cluster"`
	Size       uint64 `json:"size"`
	StoredSize uint64 `json:"stored_size"`
	Chunks     int    `json:"chunks"`
	Blake3     string `json:"blake3"`
	Date       string `json:"date"`
	TimeFrom   string `json:"time_from"`
	TimeTo     string `json:"time_to"`
	Created    string `json:"created"`
}

// statJSON is stat: the file, its metadata and its chunk list.
type statJSON struct {
	fileJSON
	Metadata  map[string]string `json:"metadata"`
	ChunkList []chunkJSON       `json:"chunk_list"`
}

type chunkJSON struct {
	ID         string `json:"id"`
	Offset     uint64 `json:"offset"`
	RawSize    uint32 `json:"raw_size"`
	StoredSize uint32 `json:"stored_size"`
}

type lsJSON struct {
	Files      []fileJSON        `json:"files"`
	Truncated  bool              `json:"truncated"`
	Unanswered []clusterNoteJSON `json:"unanswered"`
}

type clusterNoteJSON struct {
	Cluster string `json:"cluster"`
	Error   string `json:"error"`
}

type putJSON struct {
	Name        string  `json:"name"`
	Size        int64   `json:"size"`
	Chunks      int     `json:"chunks"`
	ChunksSent  int     `json:"chunks_sent"`
	ChunksKnown int     `json:"chunks_known"`
	BytesSent   int64   `json:"bytes_sent"`
	Retries     int     `json:"retries"`
	Seconds     float64 `json:"seconds"`
	Blake3      string  `json:"blake3"`
	Date        string  `json:"date"`
	TimeFrom    string  `json:"time_from"`
	TimeTo      string  `json:"time_to"`
	TimeSource  string  `json:"time_source"`
	Created     string  `json:"created"`
}

type getJSON struct {
	Name           string  `json:"name"`
	Path           string  `json:"path"`
	Size           uint64  `json:"size"`
	Blake3         string  `json:"blake3"`
	ResumedAtChunk int     `json:"resumed_at_chunk"`
	KeptBytes      int64   `json:"kept_bytes"`
	BytesReceived  int64   `json:"bytes_received"`
	Seconds        float64 `json:"seconds"`
}

// getRangeJSON is get --from/--to DIR.
type getRangeJSON struct {
	Dir        string            `json:"dir"`
	Files      int64             `json:"files"`
	Fetched    int64             `json:"fetched"`
	Resumed    int64             `json:"resumed"`
	Skipped    int64             `json:"skipped"`
	Failed     int64             `json:"failed"`
	Bytes      int64             `json:"bytes"`
	Seconds    float64           `json:"seconds"`
	Failures   []nameErrorJSON   `json:"failures"`
	Unanswered []clusterNoteJSON `json:"unanswered"`
}

type nameErrorJSON struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// rmJSON is rm NAME...: what was removed, what was not there, what failed.
type rmJSON struct {
	Removed  []string        `json:"removed"`
	NotFound []string        `json:"not_found"`
	Failed   []nameErrorJSON `json:"failed"`
}

type gcJSON struct {
	Unreferenced  uint64  `json:"unreferenced"`
	Eligible      uint64  `json:"eligible"`
	EligibleBytes uint64  `json:"eligible_bytes"`
	DeletedCopies uint64  `json:"deleted_copies"`
	Pinned        uint64  `json:"pinned"`
	DryRun        bool    `json:"dry_run"`
	Now           bool    `json:"now"`
	GraceSeconds  float64 `json:"grace_seconds"`
}

type repairJSON struct {
	ChunksChecked   uint64 `json:"chunks_checked"`
	UnderReplicated uint64 `json:"under_replicated"`
	CopiesMade      uint64 `json:"copies_made"`
	Lost            uint64 `json:"lost"`
}

type replicateJSON struct {
	Name         string   `json:"name"`
	To           string   `json:"to"`
	Chunks       uint64   `json:"chunks"`
	FilterAbsent uint64   `json:"filter_absent"`
	Checked      uint64   `json:"checked"`
	SentChunks   uint64   `json:"sent_chunks"`
	SentBytes    uint64   `json:"sent_bytes"`
	File         fileJSON `json:"file"`
}

type joinJSON struct {
	ID       string `json:"id"`
	APIAddr  string `json:"api_addr"`
	RaftAddr string `json:"raft_addr"`
}

type leaveJSON struct {
	ID string `json:"id"`
}

type tokenJSON struct {
	Token   string `json:"token"`
	Cluster string `json:"cluster"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Prefix  string `json:"prefix"`
	Expires string `json:"expires"`
}

// certJSON is cert ca/node/client: the files written.
type certJSON struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	Subject  string `json:"subject"`
	Expires  string `json:"expires"`
}

type clusterStatusJSON struct {
	Cluster  string           `json:"cluster"`
	LeaderID string           `json:"leader_id"`
	Term     uint64           `json:"term"`
	Replicas uint32           `json:"replicas"`
	Files    uint64           `json:"files"`
	Bytes    uint64           `json:"bytes"`
	Nodes    []nodeStatusJSON `json:"nodes"`
	Peers    []peerStatusJSON `json:"peers"`
}

type nodeStatusJSON struct {
	ID           string          `json:"id"`
	State        string          `json:"state"`
	Voter        bool            `json:"voter"`
	APIAddr      string          `json:"api_addr"`
	PublicAddr   string          `json:"public_addr"`
	RaftAddr     string          `json:"raft_addr"`
	Term         uint64          `json:"term"`
	AppliedIndex uint64          `json:"applied_index"`
	CommitIndex  uint64          `json:"commit_index"`
	Store        string          `json:"store"`
	Chunks       uint64          `json:"chunks"`
	StoredBytes  uint64          `json:"stored_bytes"`
	Error        string          `json:"error"`
	NotServing   string          `json:"not_serving"`
	Cache        []cacheTierJSON `json:"cache"`
	Heal         healJSON        `json:"heal"`
	Federation   federationJSON  `json:"federation"`
	Limits       limitsJSON      `json:"limits"`
}

type cacheTierJSON struct {
	Tier        string `json:"tier"`
	Hits        uint64 `json:"hits"`
	Misses      uint64 `json:"misses"`
	BytesServed uint64 `json:"bytes_served"`
	Entries     uint64 `json:"entries"`
	Bytes       uint64 `json:"bytes"`
	Evictions   uint64 `json:"evictions"`
	Skipped     uint64 `json:"skipped"`
	Errors      uint64 `json:"errors"`
	Corrupt     uint64 `json:"corrupt"`
}

type healJSON struct {
	ScrubbedChunks uint64 `json:"scrubbed_chunks"`
	ScrubCorrupt   uint64 `json:"scrub_corrupt"`
	ScrubPasses    uint64 `json:"scrub_passes"`
	RepairedCopies uint64 `json:"repaired_copies"`
	LostChunks     uint64 `json:"lost_chunks"`
	GCDeleted      uint64 `json:"gc_deleted"`
}

type federationJSON struct {
	Lookups         uint64 `json:"lookups"`
	PeerCalls       uint64 `json:"peer_calls"`
	FilterSkips     uint64 `json:"filter_skips"`
	ServedForwarded uint64 `json:"served_forwarded"`
}

type limitsJSON struct {
	OpenStreams       uint64 `json:"open_streams"`
	PeakStreams       uint64 `json:"peak_streams"`
	RefusedStreams    uint64 `json:"refused_streams"`
	IdleClosed        uint64 `json:"idle_closed"`
	RefusedHeavy      uint64 `json:"refused_heavy"`
	Denied            uint64 `json:"denied"`
	StreamMemoryBytes uint64 `json:"stream_memory_bytes"`
	RefusedMemory     uint64 `json:"refused_memory"`
}

type peerStatusJSON struct {
	Name          string   `json:"name"`
	Addrs         []string `json:"addrs"`
	Reachable     bool     `json:"reachable"`
	LeaderID      string   `json:"leader_id"`
	LeaderAddr    string   `json:"leader_addr"`
	FilterVersion uint64   `json:"filter_version"`
	FilterAgeMs   int64    `json:"filter_age_ms"`
	FilterFPRate  float64  `json:"filter_fp_rate"`
	LastContactMs int64    `json:"last_contact_ms"`
	Beyond        []string `json:"beyond"`
	Error         string   `json:"error"`
}

// rfc3339 renders Unix nanoseconds as RFC 3339 UTC ("" for 0: never set).
func rfc3339(unixNano int64) string {
	if unixNano == 0 {
		return ""
	}
	return time.Unix(0, unixNano).UTC().Format(time.RFC3339Nano)
}

func fileInfoJSON(f *pb.FileInfo) fileJSON {
	r := catalog.InfoRange(f)
	return fileJSON{
		Name: f.GetName(), Cluster: f.GetCluster(), Size: f.GetSize(), StoredSize: f.GetStoredSize(), Chunks: int(f.GetChunks()),
		Blake3: hex.EncodeToString(f.GetBlake3()), Date: f.GetDate(),
		TimeFrom: timerange.Format(r.From), TimeTo: timerange.Format(r.To), Created: rfc3339(f.GetCreatedUnixNano()),
	}
}

func manifestJSON(m *pb.FileManifest, cluster string) fileJSON {
	r := catalog.FileRange(m)
	return fileJSON{
		Name: m.GetName(), Cluster: cluster, Size: m.GetSize(), StoredSize: m.GetStoredSize(), Chunks: len(m.GetChunks()),
		Blake3: hex.EncodeToString(m.GetBlake3()), Date: m.GetDate(),
		TimeFrom: timerange.Format(r.From), TimeTo: timerange.Format(r.To), Created: rfc3339(m.GetCreatedUnixNano()),
	}
}

func statOf(m *pb.FileManifest, cluster string) statJSON {
	s := statJSON{fileJSON: manifestJSON(m, cluster), Metadata: map[string]string{}, ChunkList: []chunkJSON{}}
	for k, v := range m.GetMetadata() {
		s.Metadata[k] = v
	}
	for _, c := range m.GetChunks() {
		s.ChunkList = append(s.ChunkList, chunkJSON{ID: hex.EncodeToString(c.GetId()), Offset: c.GetOffset(), RawSize: c.GetRawSize(), StoredSize: c.GetStoredSize()})
	}
	return s
}

func notesJSON(notes []*pb.ClusterNote) []clusterNoteJSON {
	out := []clusterNoteJSON{}
	for _, n := range notes {
		out = append(out, clusterNoteJSON{Cluster: n.GetCluster(), Error: n.GetError()})
	}
	return out
}

func listJSON(files []*pb.FileInfo, truncated bool, notes []*pb.ClusterNote) lsJSON {
	out := lsJSON{Files: []fileJSON{}, Truncated: truncated, Unanswered: notesJSON(notes)}
	for _, f := range files {
		out.Files = append(out.Files, fileInfoJSON(f))
	}
	return out
}

func gcOf(r *pb.CollectResponse) gcJSON {
	grace, _ := time.ParseDuration(r.GetGrace())
	return gcJSON{Unreferenced: r.GetUnreferenced(), Eligible: r.GetEligible(), EligibleBytes: r.GetEligibleBytes(), DeletedCopies: r.GetDeletedCopies(),
		Pinned: r.GetPinned(), DryRun: r.GetDryRun(), Now: r.GetNow(), GraceSeconds: grace.Seconds()}
}

func repairOf(r *pb.RepairResponse) repairJSON {
	return repairJSON{ChunksChecked: r.GetChunksChecked(), UnderReplicated: r.GetUnderReplicated(), CopiesMade: r.GetCopiesMade(), Lost: r.GetLost()}
}

func replicateOf(name, to string, r *pb.ReplicateResponse) replicateJSON {
	return replicateJSON{Name: name, To: to, Chunks: r.GetChunks(), FilterAbsent: r.GetFilterAbsent(), Checked: r.GetChecked(),
		SentChunks: r.GetSentChunks(), SentBytes: r.GetSentBytes(), File: manifestJSON(r.GetManifest(), to)}
}

func statusOf(st *pb.StatusResponse) clusterStatusJSON {
	out := clusterStatusJSON{Cluster: st.GetCluster(), LeaderID: st.GetLeaderId(), Term: st.GetTerm(), Replicas: st.GetReplicas(),
		Files: st.GetFiles(), Bytes: st.GetBytes(), Nodes: []nodeStatusJSON{}, Peers: []peerStatusJSON{}}
	for _, n := range st.GetNodes() {
		h, f, l := n.GetHeal(), n.GetFederation(), n.GetLimits()
		nj := nodeStatusJSON{
			ID: n.GetId(), State: n.GetState(), Voter: n.GetVoter(), APIAddr: n.GetApiAddr(), PublicAddr: n.GetPublicAddr(), RaftAddr: n.GetRaftAddr(),
			Term: n.GetTerm(), AppliedIndex: n.GetAppliedIndex(), CommitIndex: n.GetCommitIndex(), Store: n.GetStore(), Chunks: n.GetChunks(),
			StoredBytes: n.GetStoredBytes(), Error: n.GetError(), NotServing: n.GetNotServing(), Cache: []cacheTierJSON{},
			Heal: healJSON{ScrubbedChunks: h.GetScrubbedChunks(), ScrubCorrupt: h.GetScrubCorrupt(), ScrubPasses: h.GetScrubPasses(),
				RepairedCopies: h.GetRepairedCopies(), LostChunks: h.GetLostChunks(), GCDeleted: h.GetGcDeleted()},
			Federation: federationJSON{Lookups: f.GetLookups(), PeerCalls: f.GetPeerCalls(), FilterSkips: f.GetFilterSkips(), ServedForwarded: f.GetServedForwarded()},
			Limits: limitsJSON{OpenStreams: l.GetOpenStreams(), PeakStreams: l.GetPeakStreams(), RefusedStreams: l.GetRefusedStreams(), IdleClosed: l.GetIdleClosed(),
				RefusedHeavy: l.GetRefusedHeavy(), Denied: l.GetDenied(), StreamMemoryBytes: l.GetStreamMemoryBytes(), RefusedMemory: l.GetRefusedMemory()},
		}
		for _, t := range n.GetCache() {
			nj.Cache = append(nj.Cache, cacheTierJSON{Tier: t.GetTier(), Hits: t.GetHits(), Misses: t.GetMisses(), BytesServed: t.GetBytesServed(),
				Entries: t.GetEntries(), Bytes: t.GetBytes(), Evictions: t.GetEvictions(), Skipped: t.GetSkipped(), Errors: t.GetErrors(), Corrupt: t.GetCorrupt()})
		}
		out.Nodes = append(out.Nodes, nj)
	}
	for _, p := range st.GetPeers() {
		out.Peers = append(out.Peers, peerStatusJSON{Name: p.GetName(), Addrs: nonNil(p.GetAddrs()), Reachable: p.GetReachable(), LeaderID: p.GetLeaderId(),
			LeaderAddr: p.GetLeaderAddr(), FilterVersion: p.GetFilterVersion(), FilterAgeMs: p.GetFilterAgeMs(), FilterFPRate: p.GetFilterFpRate(),
			LastContactMs: p.GetLastContactMs(), Beyond: nonNil(p.GetBeyond()), Error: p.GetError()})
	}
	return out
}

// nonNil keeps an empty list a list ([]) rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
