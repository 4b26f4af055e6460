// Package nemesis is a fault-injection harness for ddstore: it runs a real
// three-node cluster as child processes of the ddstore binary, lets several
// concurrent clients put, overwrite, remove, stat, list and download files
// on a small set of names while a seeded schedule of faults hits the nodes
// (kill -9 and restart, SIGSTOP and SIGCONT, and, inside network namespaces,
// partitions), and records every catalog operation with its invocation time,
// completion time and outcome.
//
// After the schedule it heals every fault and checks two things: that the
// history is linearizable against a model of the catalog (a map from name to
// file version, checked per name with porcupine), where an operation whose
// outcome is unknown (a timeout, an Unavailable) may or may not have taken
// effect; and that every file the clients were told is committed, and that
// no later operation may have replaced or removed, downloads byte for byte.
//
// Run drives one run; Report summarises it. The package's test, TestNemesis,
// runs a short schedule; NEMESIS_DURATION selects a long one.
package nemesis
