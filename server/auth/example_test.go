package auth_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/ddstore/ddstore/server/auth"
)

// A cluster's CA issues a node certificate and a client token, and a node
// verifies the token with the CA's certificate.
func Example() {
	ca, err := auth.NewCA("weather", 0)
	if err != nil {
		panic(err)
	}

	certPEM, _, err := ca.IssueNode(auth.NodeCert{Cluster: "weather", NodeID: "node1", Hosts: []string{"10.0.0.1"}})
	if err != nil {
		panic(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic(err)
	}
	node, err := auth.IdentityFromCert(cert)
	if err != nil {
		panic(err)
	}
	fmt.Println(node, node.Role)

	token, err := ca.IssueToken("weather", "alice", auth.RoleWrite, "radar/", 24*time.Hour)
	if err != nil {
		panic(err)
	}
	client, err := auth.NewTokenVerifier("weather", ca.Cert).Verify(token)
	if err != nil {
		panic(err)
	}
	fmt.Println(client, client.Covers("radar/2026-05-01.nc"), client.Covers("models/gfs.grib"))

	_, err = auth.NewTokenVerifier("other", ca.Cert).Verify(token)
	fmt.Println(err != nil)
	// Output:
	// node:weather/node1 admin
	// client:alice(write,prefix=radar/,token) true false
	// true
}
