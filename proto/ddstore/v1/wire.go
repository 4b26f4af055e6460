package ddstorev1

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
