// Package bench is ddstore's throughput suite, behind `ddstore bench`.
//
// It starts what it needs (a local 3-node cluster on the embedded store,
// unless Config.Target names a running cluster), measures uploads and
// downloads of generated files, deduplicated and partly changed re-uploads,
// resumed downloads, R=1 against R=3, several clients at once and many small
// files, and measures in the same run, on the same bytes, the baselines that
// bound each figure: sequential disk write with fsync, a raw loopback gRPC
// stream of the same message size, the chunker pipeline alone, and direct
// GridFS when a MongoDB URI is given. Every ddstore figure is reported beside
// its baseline and as a ratio, because these machines are shared and noisy
// and only figures from one run compare.
package bench
