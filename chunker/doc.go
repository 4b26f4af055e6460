// Package chunker cuts a byte stream into content-defined chunks, names each
// chunk by the BLAKE3-256 hash of its bytes, and compresses it with zstd.
//
// Cut points come from FastCDC (a gear rolling hash with normalized chunking),
// so an edit in the middle of a file changes only the chunks around it: the
// rest keep their IDs and need not be stored or sent again. A Pipeline reads
// an io.Reader with a fixed number of chunks in flight, hashing and
// compressing them on all cores, and hands them back in file order.
//
// The package imports nothing else of ddstore; every other package speaks
// in its ID and Encoded types.
package chunker
