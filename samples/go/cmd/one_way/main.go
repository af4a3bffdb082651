// One-way TLS: the client verifies certmq's server certificate with the CA file, and
// authenticates with Signature credentials (an AccessKey pair and the instance id).
//
//	build/one_way --ca-file data/server-ca/ca.pem \
//	  --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"certmq/samples/go/sample"
)

func main() {
	options := sample.ParseOptions("one_way", false)
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
		return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
	}, sample.OneWay)
}
