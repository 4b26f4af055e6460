//go:build !race

package web_test

// raceEnabled: the tests run under the race detector.
const raceEnabled = false
