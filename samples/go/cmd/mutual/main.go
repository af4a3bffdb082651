// Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
// its device certificate chain (device certificate + CA certificate) and key. Signature
// credentials are optional in mutual mode; when given, they must be valid.
//
//	build/mutual --ca-file data/server-ca/ca.pem \
//	  --chain-file device-0001/chain.pem --key-file device-0001/device.key
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"certmq/samples/go/sample"
)

func main() {
	options := sample.ParseOptions("mutual", true)
	sample.Run(options, func() (*tls.Config, error) {
		// Trust only the CA that signed the broker's certificate; crypto/tls also checks that
		// the certificate names the host we connect to.
		caPEM, err := os.ReadFile(options.CAFile)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("%s holds no PEM certificate", options.CAFile)
		}
		// What the device presents: every certificate of the chain file (device certificate,
		// then its CA), and the device certificate's key.
		device, err := tls.LoadX509KeyPair(options.ChainFile, options.KeyFile)
		if err != nil {
			return nil, err
		}
		return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{device}, MinVersion: tls.VersionTLS12}, nil
	}, sample.Mutual)
}
