//go:build race

package web_test

// raceEnabled: the tests run under the race detector, which slows them
// about tenfold.
const raceEnabled = true
