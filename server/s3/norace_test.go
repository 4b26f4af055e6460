//go:build !race

package s3_test

// raceEnabled: the tests run under the race detector.
const raceEnabled = false
