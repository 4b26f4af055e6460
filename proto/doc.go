// Package proto holds ddstore's versioned wire API. The generated Go code for
// version 1 lives in proto/ddstore/v1 (import it as ddstorev1); regenerate it
// with `make proto` after editing ddstore.proto.
package proto
