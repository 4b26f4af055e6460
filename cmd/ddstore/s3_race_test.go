//go:build race

package main

// s3RaceEnabled: the tests run under the race detector; TestS3Gateway is
// skipped then.
const s3RaceEnabled = true
