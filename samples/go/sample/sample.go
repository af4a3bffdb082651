// Package sample holds what the two Eclipse Paho Go samples share: their options, the Signature
// credentials of ApsaraMQ's conventions, and one round trip (connect, subscribe, publish, wait
// for the message to come back). cmd/one_way and cmd/mutual differ only in the TLS
// configuration they hand to Run.
package sample

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Modes, as the programs print them.
const (
	OneWay = "one-way TLS"
	Mutual = "mutual TLS"
)

var connackRefusals = map[byte]string{
	1: "unacceptable protocol version",
	2: "client identifier rejected",
	3: "server unavailable",
	4: "bad user name or password",
	5: "not authorized",
}

// Options are the inputs of both samples.
type Options struct {
	Host            string
	Port            int
	CAFile          string
	ChainFile       string // mutual only
	KeyFile         string // mutual only
	AccessKeyID     string
	AccessKeySecret string
	InstanceID      string
	ClientID        string
	Topic           string
	Timeout         time.Duration
}

// ParseOptions reads every option from a flag or an environment variable (the flag wins), as in
// every certmq sample. It exits with status 2 and a one-line message when one is missing or
// wrong, 0 after --help.
func ParseOptions(program string, mutual bool) Options {
	flags := flag.NewFlagSet(program, flag.ContinueOnError)
	flags.SetOutput(os.Stdout)
	option := func(name, variable, help, fallback string) *string {
		value := fallback
		if fromEnvironment := os.Getenv(variable); fromEnvironment != "" {
			value = fromEnvironment
		}
		return flags.String(name, value, fmt.Sprintf("%s (%s)", help, variable))
	}
	host := option("host", "MQTT_HOST", "broker host name, as written in its certificate", "localhost")
	port := option("port", "MQTT_PORT", "MQTT over TLS port", "8883")
	caFile := option("ca-file", "MQTT_CA_FILE", "CA certificate that signed the broker's certificate (PEM)", "")
	var chainFile, keyFile *string
	if mutual {
		chainFile = option("chain-file", "MQTT_CHAIN_FILE", "device certificate followed by its CA certificate (PEM)", "")
		keyFile = option("key-file", "MQTT_KEY_FILE", "the device certificate's private key (PEM)", "")
	}
	accessKeyID := option("access-key-id", "MQTT_ACCESS_KEY_ID", "AccessKeyId for Signature credentials", "")
	accessKeySecret := option("access-key-secret", "MQTT_ACCESS_KEY_SECRET", "AccessKeySecret for Signature credentials", "")
	instanceID := option("instance-id", "MQTT_INSTANCE_ID", "instance id for Signature credentials", "")
	clientID := option("client-id", "MQTT_CLIENT_ID", "MQTT client id, GroupID@@@DeviceID", "GID_demo@@@device-0001")
	topic := option("topic", "MQTT_TOPIC", "topic to subscribe and publish to", "demo/hello")
	timeout := option("timeout", "MQTT_TIMEOUT", "seconds to wait for the whole round trip", "10")
	flags.Usage = func() {
		fmt.Printf("usage: %s [options]\n\n", program)
		fmt.Println("Connect to certmq over TLS, subscribe to a topic, publish one message to it and wait for it to come back.")
		fmt.Println()
		flags.PrintDefaults()
	}
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		usageError(err.Error())
	}
	if flags.NArg() > 0 {
		usageError("unexpected argument " + flags.Arg(0))
	}

	options := Options{
		Host: *host, CAFile: *caFile, AccessKeyID: *accessKeyID, AccessKeySecret: *accessKeySecret,
		InstanceID: *instanceID, ClientID: *clientID, Topic: *topic,
	}
	if mutual {
		options.ChainFile, options.KeyFile = *chainFile, *keyFile
	}
	portNumber, portErr := strconv.Atoi(*port)
	seconds, timeoutErr := strconv.Atoi(*timeout)
	if portErr != nil || timeoutErr != nil || seconds <= 0 {
		usageError("--port and --timeout are numbers")
	}
	options.Port, options.Timeout = portNumber, time.Duration(seconds)*time.Second
	if options.CAFile == "" {
		usageError("--ca-file (or MQTT_CA_FILE) is required")
	}
	if mutual && options.ChainFile == "" {
		usageError("--chain-file (or MQTT_CHAIN_FILE) is required")
	}
	if mutual && options.KeyFile == "" {
		usageError("--key-file (or MQTT_KEY_FILE) is required")
	}
	given := 0
	for _, value := range []string{options.AccessKeyID, options.AccessKeySecret, options.InstanceID} {
		if value != "" {
			given++
		}
	}
	if given != 0 && given != 3 {
		usageError("--access-key-id, --access-key-secret and --instance-id go together")
	}
	return options
}

func usageError(message string) {
	fmt.Fprintf(os.Stderr, "error: %s (--help lists the options)\n", message)
	os.Exit(2)
}

// SignaturePassword is ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId)).
func SignaturePassword(accessKeySecret, clientID string) string {
	mac := hmac.New(sha1.New, []byte(accessKeySecret))
	mac.Write([]byte(clientID))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Run runs the round trip and exits: 0 when the message came back, 1 with a one-line error otherwise.
func Run(options Options, makeTLS func() (*tls.Config, error), mode string) {
	if err := roundTrip(options, makeTLS, mode); err != nil {
		fmt.Fprintf(os.Stderr, "error: %s\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func roundTrip(options Options, makeTLS func() (*tls.Config, error), mode string) error {
	tlsConfig, err := makeTLS()
	if err != nil {
		return fmt.Errorf("cannot load the TLS files: %v", err)
	}
	address := net.JoinHostPort(options.Host, strconv.Itoa(options.Port))
	deadline := time.Now().Add(options.Timeout)
	payload := fmt.Sprintf("hello from the Go sample (%s)", mode)

	arrivals := make(chan mqtt.Message, 16)
	lost := make(chan error, 1)
	clientOptions := mqtt.NewClientOptions().
		AddBroker("ssl://" + address).
		SetClientID(options.ClientID).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(true).
		SetKeepAlive(30 * time.Second).
		SetAutoReconnect(false). // report a failure instead of retrying
		SetConnectRetry(false).
		SetConnectTimeout(options.Timeout).
		SetTLSConfig(tlsConfig).
		SetDefaultPublishHandler(func(_ mqtt.Client, message mqtt.Message) { arrivals <- message }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	// Paho reports a failed connection as text only; dialling here keeps the error itself, to
	// tell the user what went wrong. The TLS configuration is the one set above.
	var dialError error
	clientOptions.SetCustomOpenConnectionFn(func(broker *url.URL, current mqtt.ClientOptions) (net.Conn, error) {
		dialer := &net.Dialer{Timeout: time.Until(deadline)}
		connection, err := tls.DialWithDialer(dialer, "tcp", broker.Host, current.TLSConfig)
		dialError = err
		return connection, err
	})
	if options.AccessKeyID != "" {
		clientOptions.SetUsername(fmt.Sprintf("Signature|%s|%s", options.AccessKeyID, options.InstanceID))
		clientOptions.SetPassword(SignaturePassword(options.AccessKeySecret, options.ClientID))
	}
	client := mqtt.NewClient(clientOptions)

	connecting := client.Connect()
	if !connecting.WaitTimeout(time.Until(deadline)) {
		return fmt.Errorf("timed out after %d s waiting for the broker to accept the connection", options.Timeout/time.Second)
	}
	if err := connecting.Error(); err != nil {
		if dialError != nil {
			err = dialError
		}
		return connectFailure(err, connecting.(*mqtt.ConnectToken).ReturnCode(), address, mode)
	}
	defer client.Disconnect(250)
	fmt.Printf("connected to %s as %s (%s)\n", address, options.ClientID, mode)

	subscribing := client.Subscribe(options.Topic, 1, nil)
	if !subscribing.WaitTimeout(time.Until(deadline)) {
		return fmt.Errorf("timed out after %d s waiting for the subscription", options.Timeout/time.Second)
	}
	granted := subscribing.(*mqtt.SubscribeToken).Result()[options.Topic]
	if subscribing.Error() != nil || granted == 0x80 {
		return fmt.Errorf("the broker refused the subscription to %s", options.Topic)
	}
	fmt.Printf("subscribed to %s\n", options.Topic)

	publishing := client.Publish(options.Topic, 1, false, payload)
	if !publishing.WaitTimeout(time.Until(deadline)) || publishing.Error() != nil {
		return fmt.Errorf("publishing failed: %v", publishing.Error())
	}
	fmt.Printf("published to %s: %s\n", options.Topic, payload)

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case message := <-arrivals:
			fmt.Printf("received on %s: %s\n", message.Topic(), message.Payload())
			if string(message.Payload()) == payload {
				return nil
			}
		case err := <-lost:
			return fmt.Errorf("the broker closed the connection: %v", err)
		case <-timer.C:
			return fmt.Errorf("timed out after %d s waiting for the message to come back", options.Timeout/time.Second)
		}
	}
}

func connectFailure(err error, returnCode byte, address, mode string) error {
	if refusal, known := connackRefusals[returnCode]; known {
		hint := map[byte]string{
			4: ": check the AccessKey pair and the instance id",
			5: ": `certmq decisions --limit 5` on the broker says why",
		}[returnCode]
		return fmt.Errorf("the broker refused the connection: %s (CONNACK return code %d)%s", refusal, returnCode, hint)
	}
	var hostname x509.HostnameError
	var unknownAuthority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var dnsError *net.DNSError
	switch {
	case errors.As(err, &hostname):
		return fmt.Errorf("TLS handshake with %s failed: %v (connect with a --host the broker's certificate names, e.g. localhost)", address, hostname)
	case errors.As(err, &unknownAuthority), errors.As(err, &invalid):
		return fmt.Errorf("TLS handshake with %s failed: %v (is --ca-file the CA that signed the broker's certificate, data/server-ca/ca.pem?)", address, unwrapAll(err))
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot connect to %s: connection refused (is certmq running?)", address)
	case errors.As(err, &dnsError):
		return fmt.Errorf("cannot connect to %s: unknown host name", address)
	case mode != Mutual && strings.Contains(err.Error(), "remote error: tls: certificate required"):
		// The broker's alert: it is in mutual mode and this client has no certificate to show.
		return errWantsCertificate
	case strings.Contains(err.Error(), "remote error: tls:"):
		// An alert the broker sent during the handshake.
		hint := ""
		if mode == Mutual {
			hint = " (the broker did not accept the device certificate: is its CA registered? `certmq decisions --limit 5` on the broker says why)"
		}
		return fmt.Errorf("TLS handshake with %s failed: %v%s", address, err, hint)
	case mode == Mutual:
		return errors.New("the broker closed the connection before accepting it: it did not accept the device certificate (is its CA registered?); `certmq decisions --limit 5` on the broker says why")
	default:
		return errWantsCertificate
	}
}

// errWantsCertificate: a one-way client refused by a broker in mutual mode.
var errWantsCertificate = errors.New("the broker closed the connection before accepting it: if it is in mutual mode, it wants a device certificate (use build/mutual)")

func unwrapAll(err error) error {
	for errors.Unwrap(err) != nil {
		err = errors.Unwrap(err)
	}
	return err
}
