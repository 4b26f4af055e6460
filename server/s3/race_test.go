//go:build race

package s3_test

// raceEnabled: the tests run under the race detector, which slows them
// about tenfold; the tests against a real cluster are skipped then.
const raceEnabled = true
