package client

import (
	"fmt"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/timerange"
	"google.golang.org/protobuf/proto"
)

// listBounds is a listing's range as sent: days for nodes that predate time
// ranges, and the exact times.
type listBounds struct {
	dateFrom, dateTo string
	from, to         *int64
}

// parseListBounds reads ListOptions.DateFrom and DateTo, each a day or an
// RFC 3339 timestamp. A malformed or reversed range is an error wrapping
// timerange.ErrSyntax.
func parseListBounds(opts ListOptions) (listBounds, error) {
	r, err := timerange.Parse(opts.DateFrom, opts.DateTo)
	if err != nil {
		return listBounds{}, fmt.Errorf("list: %w", err)
	}
	var b listBounds
	if opts.DateFrom != "" {
		b.dateFrom, b.from = timerange.DayOf(r.From), proto.Int64(r.From)
	}
	if opts.DateTo != "" {
		b.dateTo, b.to = timerange.DayOf(r.To), proto.Int64(r.To)
	}
	return b, nil
}

// FixedRange returns a PutOptions.TimeRange that always answers r.
func FixedRange(r timerange.Range) func() (timerange.Range, bool, error) {
	return func() (timerange.Range, bool, error) { return r, true, nil }
}

// setTimeRange puts the range opts.TimeRange answers into m.
func setTimeRange(m *pb.FileManifest, opts PutOptions) error {
	if opts.TimeRange == nil {
		return nil
	}
	r, ok, err := opts.TimeRange()
	if err != nil || !ok {
		return err
	}
	m.TimeFromUnixNano, m.TimeToUnixNano = proto.Int64(r.From), proto.Int64(r.To)
	return nil
}
