//go:build !race

package main

// s3RaceEnabled: the tests run under the race detector.
const s3RaceEnabled = false
